// CSR kernels of the masked linear map on CUDA, forward and backward, on batch-last
// operands (x^T: in x B):
//   spmm:  Y^T (rows x B) = W (rows x cols, CSR) @ X^T (cols x B)   forward, and grad_x via W^T
//   sddmm: GW[o, c] = <G^T[o, :], X^T[c, :]> at the nonzeros (o, c) of W, zero elsewhere
// A warp owns one output row and its lanes split the row's nonzeros (csr_warp.h says why and
// holds the per-row code, which the tests also run on the CPU). Column indices are int32
// (CSRStructure's) or int64, read as they come: no per-call conversion.
#include <cuda_runtime.h>

#include "csr_warp.h"
#include "kernels.h"

namespace lshx {
namespace cuda {

constexpr int kWarpsPerBlock = 8;

struct WarpXor {
  __device__ __forceinline__ float operator()(float v, int w) const { return __shfl_xor_sync(0xffffffffu, v, w); }
};

template <class Idx>
__global__ void csr_spmm_bt_kernel(const float* __restrict__ xt, const int64_t* __restrict__ crow,
                                   const Idx* __restrict__ col, const float* __restrict__ val,
                                   const float* __restrict__ bias, float* __restrict__ yt, int64_t rows, int64_t B) {
  const int64_t o = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.y;
  if (o >= rows) return;  // (the whole warp: o is the warp's)
  csr_warp::spmm_row(xt, col, val, crow[o], crow[o + 1], bias ? bias[o] : 0.f, yt + o * B, B, (int)threadIdx.x,
                     WarpXor{});
}

template <class Idx>
__global__ void csr_sddmm_bt_kernel(const float* __restrict__ xt, const float* __restrict__ gt,
                                    const int64_t* __restrict__ crow, const Idx* __restrict__ col,
                                    float* __restrict__ gw, int64_t rows, int64_t cols, int64_t B) {
  const int64_t o = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.y;
  if (o >= rows) return;
  csr_warp::sddmm_row(xt, gt + o * B, col, crow[o], crow[o + 1], gw + o * cols, B, (int)threadIdx.x);
}

static unsigned row_blocks(int64_t rows) { return (unsigned)((rows + kWarpsPerBlock - 1) / kWarpsPerBlock); }

template <class Idx>
static cudaError_t spmm(const float* xt, const int64_t* crow, const Idx* col, const float* val, const float* bias,
                        float* yt, int64_t rows, int64_t B, cudaStream_t stream) {
  if (rows == 0 || B == 0) return cudaSuccess;
  csr_spmm_bt_kernel<Idx><<<row_blocks(rows), dim3(32, kWarpsPerBlock), 0, stream>>>(xt, crow, col, val, bias, yt,
                                                                                    rows, B);
  return cudaGetLastError();
}

template <class Idx>
static cudaError_t sddmm(const float* xt, const float* gt, const int64_t* crow, const Idx* col, float* gw,
                         int64_t rows, int64_t cols, int64_t B, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  cudaError_t err = cudaMemsetAsync(gw, 0, sizeof(float) * rows * cols, stream);
  if (err != cudaSuccess || B == 0) return err;
  csr_sddmm_bt_kernel<Idx><<<row_blocks(rows), dim3(32, kWarpsPerBlock), 0, stream>>>(xt, gt, crow, col, gw, rows,
                                                                                     cols, B);
  return cudaGetLastError();
}

cudaError_t csr_spmm_bt(const float* xt, const int64_t* crow, const int32_t* col, const float* val,
                        const float* bias, float* yt, int64_t rows, int64_t B, cudaStream_t stream) {
  return spmm(xt, crow, col, val, bias, yt, rows, B, stream);
}

cudaError_t csr_spmm_bt(const float* xt, const int64_t* crow, const int64_t* col, const float* val,
                        const float* bias, float* yt, int64_t rows, int64_t B, cudaStream_t stream) {
  return spmm(xt, crow, col, val, bias, yt, rows, B, stream);
}

cudaError_t csr_sddmm_bt(const float* xt, const float* gt, const int64_t* crow, const int32_t* col, float* gw,
                         int64_t rows, int64_t cols, int64_t B, cudaStream_t stream) {
  return sddmm(xt, gt, crow, col, gw, rows, cols, B, stream);
}

cudaError_t csr_sddmm_bt(const float* xt, const float* gt, const int64_t* crow, const int64_t* col, float* gw,
                         int64_t rows, int64_t cols, int64_t B, cudaStream_t stream) {
  return sddmm(xt, gt, crow, col, gw, rows, cols, B, stream);
}

}  // namespace cuda
}  // namespace lshx
