// The per-row bodies of the CSR kernels (csr_linear.cu), written once for the device and the
// host: on the GPU a warp runs them with __shfl_xor_sync, and tests/test_csr_warp.py runs the
// same code on the CPU with 32 threads standing in for the lanes (tests/csrc/csr_warp_host.cpp),
// so the lane arithmetic is tested where no GPU is.
//
// Why lanes over nonzeros: with the batch spread over the lanes (the first design) each lane
// walked the whole row (~500 nonzeros at the paper's size) through a dependent
// column-then-x load chain, and a batch of 20 left 12 lanes idle. Here lane l takes the
// nonzeros l, l + 32, ... of the row and keeps 32 batch sums in registers; one transposing
// reduction (31 shuffles) leaves lane j holding batch entry j's total.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define LSHX_HD __host__ __device__ __forceinline__
#define LSHX_UNROLL _Pragma("unroll")
#else
#define LSHX_HD inline
#define LSHX_UNROLL
#endif

namespace lshx {
namespace csr_warp {

constexpr int kLanes = 32;

// acc: this lane's 32 partial sums (index q: batch entry q of the tile). Returns, in lane l,
// the sum over the 32 lanes of acc[l]. xor_shfl(v, w) returns v of lane (l ^ w). Level w pairs
// entries (i, i + w): the lanes with bit w set keep i + w, the others i, and each adds its
// partner's copy of the entry it keeps; after the levels 16, 8, 4, 2, 1, acc[0] is entry l.
template <class Xor>
LSHX_HD float transpose_sum(float (&acc)[kLanes], int lane, const Xor& xor_shfl) {
  LSHX_UNROLL
  for (int w = kLanes / 2; w >= 1; w >>= 1) {
    const bool upper = (lane & w) != 0;
    LSHX_UNROLL
    for (int i = 0; i < w; ++i) {
      const float keep = upper ? acc[i + w] : acc[i];
      const float send = upper ? acc[i] : acc[i + w];
      acc[i] = keep + xor_shfl(send, w);
    }
  }
  return acc[0];
}

// One output row of yt (rows x B, batch-last) = W (CSR) @ xt (cols x B) + bias, run by all 32
// lanes of a warp together (every lane must call it: the reduction needs the whole warp).
// begin/end: the row's nonzeros; yrow: yt + o * B.
template <class Idx, class Xor>
LSHX_HD void spmm_row(const float* xt, const Idx* col, const float* val, int64_t begin, int64_t end, float bias,
                      float* yrow, int64_t B, int lane, const Xor& xor_shfl) {
  for (int64_t q0 = 0; q0 < B; q0 += kLanes) {
    const int64_t left = B - q0;
    const int nb = left < kLanes ? (int)left : kLanes;
    float acc[kLanes];
    LSHX_UNROLL
    for (int q = 0; q < kLanes; ++q) acc[q] = 0.f;
    for (int64_t p = begin + lane; p < end; p += kLanes) {
      const float v = val[p];
      const float* xr = xt + (int64_t)col[p] * B + q0;
      LSHX_UNROLL
      for (int q = 0; q < kLanes; ++q)
        if (q < nb) acc[q] += v * xr[q];
    }
    const float s = transpose_sum(acc, lane, xor_shfl);
    if (lane < nb) yrow[q0 + lane] = s + bias;
  }
}

// The weight gradient at one row's nonzeros: gwrow[col[p]] = <grow, xt[col[p], :]> for the
// row's nonzeros p, a lane per nonzero (no reduction). grow: gt + o * B; gwrow: gw + o * cols,
// zeroed before (the entries off the structure stay 0).
template <class Idx>
LSHX_HD void sddmm_row(const float* xt, const float* grow, const Idx* col, int64_t begin, int64_t end,
                       float* gwrow, int64_t B, int lane) {
  for (int64_t p = begin + lane; p < end; p += kLanes) {
    const int64_t c = col[p];
    const float* xr = xt + c * B;
    float s = 0.f;
    for (int64_t q = 0; q < B; ++q) s += grow[q] * xr[q];
    gwrow[c] = s;
  }
}

}  // namespace csr_warp
}  // namespace lshx
