// Persistent-style recurrence of one sparse LSTM layer (inference: evaluation, the
// Lyapunov trajectory): all T steps in one cooperative launch. Each block owns a slice of
// the hidden units and keeps their four gate rows of W_hh (CSR) in shared memory for the
// whole sequence, so the recurrent weights are read from global memory once, not T times.
// Between steps the grid synchronizes; h is double-buffered in global memory (B x H, L2
// resident) and c stays with the block that owns the unit.
//
// Inputs: xproj (T, B, 4H) = x_t @ W_ih^T + b_ih + b_hh, gates in nn.LSTM order i, f, g, o;
// W_hh (4H x H) in CSR (crow, col, val); h0, c0 (B, H). Outputs: out (T, B, H), hT, cT.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.h"

namespace cg = cooperative_groups;

namespace lshx {
namespace cuda {

namespace {

constexpr int kThreads = 256;  // 8 warps per block

// expf, not the __expf intrinsic: the fallback path (ATen) and the CPU op use the accurate one
__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }

// Shared-memory layout of a block's slice: row pointers (4U + 1) then values then columns.
struct Slice {
  int* rptr;
  float* val;
  int* col;
};

__global__ void lstm_persistent_kernel(const float* __restrict__ xproj, const int64_t* __restrict__ crow,
                                       const int64_t* __restrict__ col, const float* __restrict__ val,
                                       const float* __restrict__ c0, float* __restrict__ hbuf,
                                       float* __restrict__ c, float* __restrict__ out, int64_t T, int64_t B,
                                       int64_t H, int64_t U, int use_smem) {
  extern __shared__ unsigned char smem[];
  cg::grid_group grid = cg::this_grid();
  const int64_t u0 = (int64_t)blockIdx.x * U;
  const int64_t u1 = u0 + U < H ? u0 + U : H;
  const int64_t nu = u1 > u0 ? u1 - u0 : 0;

  // Stage this block's 4 * nu rows (gate g, unit u0 + j is row g*H + u0 + j) in shared memory.
  Slice s;
  s.rptr = reinterpret_cast<int*>(smem);
  if (use_smem) {
    if (threadIdx.x == 0) {
      int acc = 0;
      for (int64_t g = 0; g < 4; ++g)
        for (int64_t j = 0; j < nu; ++j) {
          s.rptr[g * nu + j] = acc;
          const int64_t r = g * H + u0 + j;
          acc += (int)(crow[r + 1] - crow[r]);
        }
      s.rptr[4 * nu] = acc;
    }
    __syncthreads();
    s.val = reinterpret_cast<float*>(s.rptr + 4 * U + 1);
    s.col = reinterpret_cast<int*>(s.val + s.rptr[4 * nu]);
    for (int64_t g = 0; g < 4; ++g)
      for (int64_t j = 0; j < nu; ++j) {
        const int64_t r = g * H + u0 + j, base = crow[r], n = crow[r + 1] - base, dst = s.rptr[g * nu + j];
        for (int64_t p = threadIdx.x; p < n; p += blockDim.x) {
          s.val[dst + p] = val[base + p];
          s.col[dst + p] = (int)col[base + p];
        }
      }
    __syncthreads();
  }
  for (int64_t idx = threadIdx.x; idx < nu * B; idx += blockDim.x) {
    const int64_t q = idx / nu, u = u0 + idx % nu;
    c[q * H + u] = c0[q * H + u];
  }
  __syncthreads();  // c of this block's units initialized before any warp updates them

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t t = 0; t < T; ++t) {
    const float* hprev = hbuf + (t % 2) * B * H;
    float* hnext = hbuf + ((t + 1) % 2) * B * H;
    // one warp per (unit, batch row): four sparse dot products with h_{t-1}
    for (int64_t task = warp; task < nu * B; task += warps) {
      const int64_t q = task / nu, j = task % nu, u = u0 + j;
      const float* h = hprev + q * H;
      float a[4];
      for (int g = 0; g < 4; ++g) {
        float acc = 0.f;
        if (use_smem) {
          for (int p = s.rptr[g * nu + j] + lane; p < s.rptr[g * nu + j + 1]; p += 32) acc += s.val[p] * h[s.col[p]];
        } else {
          const int64_t r = g * H + u;
          for (int64_t p = crow[r] + lane; p < crow[r + 1]; p += 32) acc += val[p] * h[col[p]];
        }
        for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
        a[g] = acc;
      }
      if (lane == 0) {
        const float* xp = xproj + (t * B + q) * 4 * H;
        const float ig = sigmoidf_(xp[u] + a[0]);
        const float fg = sigmoidf_(xp[H + u] + a[1]);
        const float gg = tanhf(xp[2 * H + u] + a[2]);
        const float og = sigmoidf_(xp[3 * H + u] + a[3]);
        const float cn = fg * c[q * H + u] + ig * gg;
        const float hn = og * tanhf(cn);
        c[q * H + u] = cn;
        hnext[q * H + u] = hn;
        out[(t * B + q) * H + u] = hn;
      }
    }
    grid.sync();  // h_t complete everywhere before any block reads it
  }
}

size_t slice_bytes(int64_t U, int64_t nnz) { return sizeof(int) * (4 * U + 1) + (sizeof(float) + sizeof(int)) * nnz; }

}  // namespace

cudaError_t lstm_persistent(const float* xproj, const int64_t* crow_host, const int64_t* crow, const int64_t* col,
                            const float* val, const float* h0, const float* c0, float* hbuf, float* c, float* out,
                            int64_t T, int64_t B, int64_t H, int* used_smem, cudaStream_t stream) {
  if (T == 0 || B == 0 || H == 0) return cudaSuccess;
  int device = 0, sms = 0, coop = 0, max_smem = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device);
  cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (!coop) return cudaErrorNotSupported;
  // h_0 into the first half of the double buffer
  err = cudaMemcpyAsync(hbuf, h0, sizeof(float) * B * H, cudaMemcpyDeviceToDevice, stream);
  if (err != cudaSuccess) return err;

  // One block per SM; units split evenly. Shared memory holds the largest slice if it fits.
  int64_t blocks = sms > 0 ? sms : 1;
  if (blocks > H) blocks = H;
  const int64_t U = (H + blocks - 1) / blocks;
  blocks = (H + U - 1) / U;
  int64_t worst = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t u0 = b * U, u1 = u0 + U < H ? u0 + U : H;
    int64_t nnz = 0;
    for (int64_t g = 0; g < 4; ++g) nnz += crow_host[g * H + u1] - crow_host[g * H + u0];
    if (nnz > worst) worst = nnz;
  }
  int use_smem = slice_bytes(U, worst) <= (size_t)max_smem ? 1 : 0;
  size_t smem = use_smem ? slice_bytes(U, worst) : sizeof(int);
  if (use_smem) {
    err = cudaFuncSetAttribute(lstm_persistent_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (err != cudaSuccess) return err;
  }
  int per_sm = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, lstm_persistent_kernel, kThreads, smem);
  if ((int64_t)per_sm * sms < blocks) return cudaErrorCooperativeLaunchTooLarge;
  *used_smem = use_smem;
  void* args[] = {(void*)&xproj, (void*)&crow, (void*)&col, (void*)&val, (void*)&c0, (void*)&hbuf,
                  (void*)&c, (void*)&out, (void*)&T, (void*)&B, (void*)&H, (void*)&U, (void*)&use_smem};
  return cudaLaunchCooperativeKernel((const void*)lstm_persistent_kernel, dim3((unsigned)blocks), dim3(kThreads),
                                     args, smem, stream);
}

}  // namespace cuda
}  // namespace lshx
