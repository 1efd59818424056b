// Batched Householder QR for the Lyapunov step: one block per sample, the N x k block
// (row-major, as J.B comes out of the GEMM) factored in place in global memory, then the
// reduced Q formed by applying the reflectors backwards to [I; 0]. Returns Q (N x k,
// row-major) and log|R_jj| floored at FLT_MIN. The threads of a block share the columns:
// thread c owns column c of the trailing matrix, so a warp reads consecutive addresses of
// each row (coalesced). Meant for the many small and medium blocks of a Lyapunov run
// (K samples x layers); large single factorizations go to cuSOLVER through ATen.
//
// Same algorithm as the CPU op lshx::householder_qr (csrc/cpu/householder.cpp), which the
// tests check against torch.linalg.qr.
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "kernels.h"

namespace lshx {
namespace cuda {

namespace {

constexpr int kThreads = 256;

// Sum over the block; `red` has kThreads / 32 doubles. Every thread gets the result.
__device__ double block_sum(double v, double* red) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  double s = 0.0;
  for (int w = 0; w < (int)(blockDim.x / 32); ++w) s += red[w];
  return s;
}

// m[j:, c] -= beta * v * (v . m[j:, c]) for the reflector v stored in column j of a (v[0] = 1
// implicit, v[1:] below the diagonal); m is a itself (factorization) or Q (forming Q).
__device__ __forceinline__ void reflect_column(const float* a, float* m, int64_t N, int64_t k, int64_t j, int64_t c,
                                               float beta) {
  float w = m[j * k + c];
  for (int64_t r = j + 1; r < N; ++r) w += a[r * k + j] * m[r * k + c];
  w *= beta;
  m[j * k + c] -= w;
  for (int64_t r = j + 1; r < N; ++r) m[r * k + c] -= w * a[r * k + j];
}

// a: (N x k) one sample, factored in place (R above the diagonal, v_j below, v_j[0] = 1
// implicit); tau: k scalars; q: (N x k) output; logr: k outputs.
__global__ void householder_kernel(float* __restrict__ a_all, float* __restrict__ tau_all,
                                   float* __restrict__ q_all, float* __restrict__ logr_all, int64_t N, int64_t k) {
  __shared__ double red[kThreads / 32];
  __shared__ float sh_beta, sh_v0;
  const int64_t s = blockIdx.x;
  float* a = a_all + s * N * k;
  float* tau = tau_all + s * k;
  float* q = q_all + s * N * k;
  float* logr = logr_all + s * k;

  for (int64_t j = 0; j < k; ++j) {
    // ||a[j:, j]||, and the reflector that maps it to alpha e_1. The sum of squares is taken in
    // double: in float it underflows to 0 for columns below ~1e-19 and overflows above ~1e19.
    double part = 0.0;
    for (int64_t r = j + threadIdx.x; r < N; r += blockDim.x) part += (double)a[r * k + j] * a[r * k + j];
    const double norm2 = block_sum(part, red);
    if (threadIdx.x == 0) {
      const float x0 = a[j * k + j];
      const float norm = (float)sqrt(norm2);
      if (norm == 0.f) {  // a zero column: no reflection, R_jj = 0
        sh_beta = 0.f;
        sh_v0 = 1.f;
        logr[j] = logf(FLT_MIN);
      } else {
        const float alpha = x0 > 0.f ? -norm : norm;  // sign opposite to x0: no cancellation
        const float v0 = x0 - alpha;
        sh_v0 = v0;
        sh_beta = -v0 / alpha;  // tau = (alpha - x0) / alpha, with v scaled so that v[0] = 1
        a[j * k + j] = alpha;
        logr[j] = isnan(alpha) ? alpha : logf(fmaxf(fabsf(alpha), FLT_MIN));  // NaN stays NaN, as on the CPU
      }
      tau[j] = sh_beta;
    }
    __syncthreads();
    const float beta = sh_beta, v0 = sh_v0;
    if (beta != 0.f)  // v = a[j+1:, j] / v0 below the diagonal
      for (int64_t r = j + 1 + threadIdx.x; r < N; r += blockDim.x) a[r * k + j] /= v0;
    __syncthreads();
    // trailing columns: a[j:, c] -= beta * v * (v . a[j:, c]); thread owns column c
    if (beta != 0.f)
      for (int64_t c = j + 1 + threadIdx.x; c < k; c += blockDim.x) reflect_column(a, a, N, k, j, c, beta);
    __syncthreads();
  }
  // Q = H_0 ... H_{k-1} [I; 0]: start from [I; 0], apply the reflectors last to first.
  for (int64_t idx = threadIdx.x; idx < N * k; idx += blockDim.x) q[idx] = (idx / k == idx % k) ? 1.f : 0.f;
  __syncthreads();
  for (int64_t j = k - 1; j >= 0; --j) {
    const float beta = tau[j];
    if (beta != 0.f)
      for (int64_t c = j + threadIdx.x; c < k; c += blockDim.x) reflect_column(a, q, N, k, j, c, beta);
    __syncthreads();
  }
}

}  // namespace

cudaError_t householder_qr(float* a, float* tau, float* q, float* logr, int64_t K, int64_t N, int64_t k,
                           cudaStream_t stream) {
  if (K == 0 || k == 0) return cudaSuccess;
  householder_kernel<<<(unsigned)K, kThreads, 0, stream>>>(a, tau, q, logr, N, k);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace lshx
