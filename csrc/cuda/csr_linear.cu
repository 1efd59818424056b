// CSR SpMM for the masked linear map on CUDA: y (B x out) = x (B x in) @ W^T, W in CSR.
// One block per output row; its threads walk the batch, each summing the row's nonzeros.
#include <cuda_runtime.h>

#include "kernels.h"

namespace lshx {
namespace cuda {

__global__ void csr_linear_kernel(const float* __restrict__ x, const int64_t* __restrict__ crow,
                                  const int64_t* __restrict__ col, const float* __restrict__ val,
                                  const float* __restrict__ bias, float* __restrict__ y, int64_t B, int64_t in,
                                  int64_t out) {
  const int64_t o = blockIdx.x;
  if (o >= out) return;
  const int64_t begin = crow[o], end = crow[o + 1];
  for (int64_t q = threadIdx.x; q < B; q += blockDim.x) {
    const float* xr = x + q * in;
    float acc = bias ? bias[o] : 0.f;
    for (int64_t p = begin; p < end; ++p) acc += val[p] * xr[col[p]];
    y[q * out + o] = acc;
  }
}

cudaError_t csr_linear(const float* x, const int64_t* crow, const int64_t* col, const float* val,
                       const float* bias, float* y, int64_t B, int64_t in, int64_t out, cudaStream_t stream) {
  if (out == 0 || B == 0) return cudaSuccess;
  const int threads = B >= 128 ? 128 : (B >= 32 ? 32 : (int)B);
  csr_linear_kernel<<<(unsigned)out, threads, 0, stream>>>(x, crow, col, val, bias, y, B, in, out);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace lshx
