// CUDA gate kernels of lshx::rhn_recurrence (csrc/cpu/rhn_recurrence.cpp has the arithmetic
// and the layout): one launch per micro-step forward and one per micro-step backward, the
// GEMMs between them go to cuBLAS through ATen (csrc/cuda/rhn_bindings.cpp).
#include <cuda_runtime.h>

#include "kernels.h"

namespace lshx {
namespace cuda {

// Forward, one thread per state entry (b, j): pre (B, 2H) = s_in @ W_d^T from the GEMM.
__global__ void rhn_forward_step_kernel(const float* __restrict__ pre, const float* __restrict__ xp_t,
                                        const float* __restrict__ bias, const float* __restrict__ sprev,
                                        const float* __restrict__ drop, float* __restrict__ gates,
                                        float* __restrict__ s_next, float* __restrict__ s_out,
                                        float* __restrict__ sin_next, int64_t B, int64_t H) {
  const int64_t n = B * H;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = i / H, j = i - b * H, r = b * 2 * H;
    float ah = pre[r + j] + bias[j], at = pre[r + H + j] + bias[H + j];
    if (xp_t) {
      ah += xp_t[r + j];
      at += xp_t[r + H + j];
    }
    const float h = tanhf(ah), g = 1.f / (1.f + expf(-at));
    gates[r + j] = h;
    gates[r + H + j] = g;
    const float sn = h * g + sprev[i] * (1.f - g);
    s_next[i] = sn;
    if (s_out) s_out[i] = sn;
    if (sin_next) sin_next[i] = sn * drop[i];
  }
}

// Backward, one thread per state entry: G = carry (+ drop * tmp) (+ gadd); the pre-activation
// gradient of [h, g] into gpre (B, 2H); carry = G * (1 - g).
__global__ void rhn_backward_step_kernel(float* __restrict__ carry, const float* __restrict__ tmp,
                                         const float* __restrict__ drop, const float* __restrict__ gadd,
                                         const float* __restrict__ gates, const float* __restrict__ sprev,
                                         float* __restrict__ gpre, int64_t B, int64_t H) {
  const int64_t n = B * H;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = i / H, j = i - b * H, r = b * 2 * H;
    float G = carry[i];
    if (tmp) G += drop ? drop[i] * tmp[i] : tmp[i];
    if (gadd) G += gadd[i];
    const float h = gates[r + j], g = gates[r + H + j];
    gpre[r + j] = G * g * (1.f - h * h);
    gpre[r + H + j] = G * (h - sprev[i]) * g * (1.f - g);
    carry[i] = G * (1.f - g);
  }
}

static unsigned blocks_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  return (unsigned)(blocks > 65535 ? 65535 : (blocks < 1 ? 1 : blocks));
}

cudaError_t rhn_forward_step(const float* pre, const float* xp_t, const float* bias, const float* sprev,
                             const float* drop, float* gates, float* s_next, float* s_out, float* sin_next,
                             int64_t B, int64_t H, cudaStream_t stream) {
  if (B * H == 0) return cudaSuccess;
  rhn_forward_step_kernel<<<blocks_for(B * H, 256), 256, 0, stream>>>(pre, xp_t, bias, sprev, drop, gates, s_next,
                                                                      s_out, sin_next, B, H);
  return cudaGetLastError();
}

cudaError_t rhn_backward_step(float* carry, const float* tmp, const float* drop, const float* gadd,
                              const float* gates, const float* sprev, float* gpre, int64_t B, int64_t H,
                              cudaStream_t stream) {
  if (B * H == 0) return cudaSuccess;
  rhn_backward_step_kernel<<<blocks_for(B * H, 256), 256, 0, stream>>>(carry, tmp, drop, gadd, gates, sprev, gpre,
                                                                       B, H);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace lshx
