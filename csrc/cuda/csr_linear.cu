// CSR kernels of the masked linear map on CUDA, forward and backward, on batch-last
// operands (x^T: in x B), so that the lanes of a warp read consecutive batch entries:
//   spmm:  Y^T (rows x B) = W (rows x cols, CSR) @ X^T (cols x B)   forward, and grad_x via W^T
//   sddmm: GW[o, c] = <G^T[o, :], X^T[c, :]> at the nonzeros (o, c) of W, zero elsewhere
// A warp owns one output row; the row's values and column indices are read once per warp
// (broadcast loads) and the batch is spread over the lanes, 32 at a time.
#include <cuda_runtime.h>

#include "kernels.h"

namespace lshx {
namespace cuda {

constexpr int kWarpsPerBlock = 8;

__global__ void csr_spmm_bt_kernel(const float* __restrict__ xt, const int64_t* __restrict__ crow,
                                   const int64_t* __restrict__ col, const float* __restrict__ val,
                                   const float* __restrict__ bias, float* __restrict__ yt, int64_t rows, int64_t B) {
  const int64_t o = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.y;
  if (o >= rows) return;
  const int64_t begin = crow[o], end = crow[o + 1];
  const float b = bias ? bias[o] : 0.f;
  for (int64_t q = threadIdx.x; q < B; q += 32) {
    float acc = 0.f;
    for (int64_t p = begin; p < end; ++p) acc += val[p] * xt[col[p] * B + q];
    yt[o * B + q] = acc + b;
  }
}

__global__ void csr_sddmm_bt_kernel(const float* __restrict__ xt, const float* __restrict__ gt,
                                    const int64_t* __restrict__ crow, const int64_t* __restrict__ col,
                                    float* __restrict__ gw, int64_t rows, int64_t cols, int64_t B) {
  const int64_t o = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.y;
  if (o >= rows) return;
  const int lane = threadIdx.x;
  for (int64_t p = crow[o]; p < crow[o + 1]; ++p) {
    const int64_t c = col[p];
    float s = 0.f;
    for (int64_t q = lane; q < B; q += 32) s += gt[o * B + q] * xt[c * B + q];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
    if (lane == 0) gw[o * cols + c] = s;
  }
}

static unsigned row_blocks(int64_t rows) { return (unsigned)((rows + kWarpsPerBlock - 1) / kWarpsPerBlock); }

cudaError_t csr_spmm_bt(const float* xt, const int64_t* crow, const int64_t* col, const float* val,
                        const float* bias, float* yt, int64_t rows, int64_t B, cudaStream_t stream) {
  if (rows == 0 || B == 0) return cudaSuccess;
  csr_spmm_bt_kernel<<<row_blocks(rows), dim3(32, kWarpsPerBlock), 0, stream>>>(xt, crow, col, val, bias, yt,
                                                                               rows, B);
  return cudaGetLastError();
}

cudaError_t csr_sddmm_bt(const float* xt, const float* gt, const int64_t* crow, const int64_t* col, float* gw,
                         int64_t rows, int64_t cols, int64_t B, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  cudaError_t err = cudaMemsetAsync(gw, 0, sizeof(float) * rows * cols, stream);
  if (err != cudaSuccess || B == 0) return err;
  csr_sddmm_bt_kernel<<<row_blocks(rows), dim3(32, kWarpsPerBlock), 0, stream>>>(xt, gt, crow, col, gw, rows,
                                                                                cols, B);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace lshx
