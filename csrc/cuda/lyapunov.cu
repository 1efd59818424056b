// CUDA kernels of the Lyapunov step: Jacobian blocks from gate-scaled weight rows and log|diag R|.
#include <cuda_runtime.h>

#include <cfloat>

#include "kernels.h"

namespace lshx {
namespace cuda {

// One thread per output element (sample s, row j, column m); consecutive threads walk m,
// so the reads of each weight row are coalesced.
__global__ void row_combine_kernel(const float* __restrict__ w, const float* __restrict__ coef,
                                   const float* __restrict__ diag, float* __restrict__ out, int64_t K,
                                   int64_t G, int64_t H, int64_t M) {
  const int64_t total = K * H * M;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t m = idx % M, r = idx / M, s = r / H, j = r % H;
    float v = 0.f;
    for (int64_t g = 0; g < G; ++g) v += coef[(s * G + g) * H + j] * w[(g * H + j) * M + m];
    if (diag && m == j) v += diag[r];
    out[idx] = v;
  }
}

__global__ void log_abs_diag_kernel(const float* __restrict__ r, float* __restrict__ out, int64_t K,
                                    int64_t k) {
  const int64_t total = K * k;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = idx / k, j = idx % k;
    const float d = r[(s * k + j) * k + j];
    out[idx] = isnan(d) ? d : logf(fmaxf(fabsf(d), FLT_MIN));  // never -inf, NaN stays NaN: as on the CPU
  }
}

static unsigned grid_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  return (unsigned)(blocks > 65535 ? 65535 : (blocks < 1 ? 1 : blocks));
}

cudaError_t row_combine(const float* w, const float* coef, const float* diag, float* out, int64_t K, int64_t G,
                        int64_t H, int64_t M, cudaStream_t stream) {
  row_combine_kernel<<<grid_for(K * H * M, 256), 256, 0, stream>>>(w, coef, diag, out, K, G, H, M);
  return cudaGetLastError();
}

cudaError_t log_abs_diag(const float* r, float* out, int64_t K, int64_t k, cudaStream_t stream) {
  log_abs_diag_kernel<<<grid_for(K * k, 256), 256, 0, stream>>>(r, out, K, k);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace lshx
