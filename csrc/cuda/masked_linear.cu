// Mask application for lshx::masked_linear on CUDA; the GEMMs go to cuBLAS through ATen.
#include <cuda_runtime.h>

#include "kernels.h"

namespace lshx {
namespace cuda {

__global__ void apply_mask_kernel(const float* __restrict__ w, const bool* __restrict__ mask,
                                  float* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = w[i] * (float)mask[i];  // as on the CPU: a masked NaN/Inf stays NaN
}

cudaError_t apply_mask(const float* w, const bool* mask, float* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int threads = 256;
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks > 65535) blocks = 65535;
  apply_mask_kernel<<<(unsigned)blocks, threads, 0, stream>>>(w, mask, out, n);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace lshx
