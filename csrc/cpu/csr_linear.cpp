// CPU CSR path of the masked linear map, for low densities: y = x @ W^T + b with W (out x in)
// in CSR form (crow, col, val), and its backward (grad_x through the transposed structure,
// grad of the values only at the nonzeros). The structure is rebuilt by the caller at each
// topology update; the values are gathered from the dense weight at each call.
//
// Layout: the batch is moved to the fast axis (x^T, in x Bp, Bp = B padded to 8), so each
// nonzero reads one contiguous row of x^T and the accumulators of an output row stay in
// registers, 16 batch lanes at a time. float32 gets an AVX2/FMA clone chosen at run time,
// so the build stays portable.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../utils.h"
#include "csr_kernels.h"

namespace lshx {
namespace {

// y[0:W] = sum_{p in [p0, p1)} V[p] * X[col[p], q0:q0+W]: one output row, W batch lanes, W
// a compile-time width so the accumulators live in registers.
template <int W, typename scalar_t, typename index_t>
__attribute__((always_inline)) inline void spmm_chunk(const scalar_t* __restrict__ X, int64_t p0, int64_t p1,
                                                      const index_t* __restrict__ C,
                                                      const scalar_t* __restrict__ V, scalar_t* __restrict__ y,
                                                      int64_t Bp, int64_t q0) {
  scalar_t acc[W] = {};
  for (int64_t p = p0; p < p1; ++p) {
    const scalar_t v = V[p];
    const scalar_t* xr = X + static_cast<int64_t>(C[p]) * Bp + q0;
    for (int q = 0; q < W; ++q) acc[q] += v * xr[q];
  }
  for (int q = 0; q < W; ++q) y[q] = acc[q];
}

// The rows o of [b, e), the batch in chunks of 16 lanes, then 8 (Bp is a multiple of 8):
// wider register tiles spill (measured: 24 or 32 lanes at once ran 6x slower than 16 at
// 6000x1500, density 0.1).
template <typename scalar_t, typename index_t>
__attribute__((always_inline)) inline void spmm_rows(const scalar_t* X, const int64_t* R, const index_t* C,
                                                     const scalar_t* V, scalar_t* Y, int64_t Bp, int64_t b,
                                                     int64_t e) {
  for (int64_t o = b; o < e; ++o) {
    int64_t q0 = 0;
    for (; q0 + 16 <= Bp; q0 += 16) spmm_chunk<16>(X, R[o], R[o + 1], C, V, Y + o * Bp + q0, Bp, q0);
    for (; q0 < Bp; q0 += 8) spmm_chunk<8>(X, R[o], R[o + 1], C, V, Y + o * Bp + q0, Bp, q0);
  }
}

// GW[o, col[p]] = <Yg[o, :Bp], X[col[p], :Bp]> for the rows o of [b, e), zero elsewhere in
// the row: the weight gradient at the nonzeros only, written straight into the dense
// gradient (each thread zeroes and fills its own rows).
template <typename scalar_t, typename index_t>
__attribute__((always_inline)) inline void sddmm_rows(const scalar_t* X, const scalar_t* Yg, const int64_t* R,
                                                      const index_t* C, scalar_t* GW, int64_t in, int64_t Bp,
                                                      int64_t b, int64_t e) {
  for (int64_t o = b; o < e; ++o) {
    const scalar_t* g = Yg + o * Bp;
    scalar_t* gw = GW + o * in;
    std::fill(gw, gw + in, scalar_t(0));
    for (int64_t p = R[o]; p < R[o + 1]; ++p) {
      const scalar_t* xr = X + static_cast<int64_t>(C[p]) * Bp;
      scalar_t acc[8] = {};
      for (int64_t q0 = 0; q0 < Bp; q0 += 8)
        for (int q = 0; q < 8; ++q) acc[q] += g[q0 + q] * xr[q0 + q];
      scalar_t s = 0;
      for (int q = 0; q < 8; ++q) s += acc[q];
      gw[C[p]] = s;
    }
  }
}

// The float32 kernels twice: an AVX2/FMA clone and the baseline one.
template <typename index_t>
__attribute__((target("avx2,fma"))) void spmm_f32_avx2(const float* X, const int64_t* R, const index_t* C,
                                                       const float* V, float* Y, int64_t Bp, int64_t b, int64_t e) {
  spmm_rows(X, R, C, V, Y, Bp, b, e);
}
template <typename index_t>
__attribute__((target("avx2,fma"))) void sddmm_f32_avx2(const float* X, const float* Yg, const int64_t* R,
                                                        const index_t* C, float* GW, int64_t in, int64_t Bp,
                                                        int64_t b, int64_t e) {
  sddmm_rows(X, Yg, R, C, GW, in, Bp, b, e);
}

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

template <typename F>
void with_index(const at::Tensor& col, F&& f) {
  if (col.scalar_type() == at::kInt) f(col.data_ptr<int32_t>());
  else f(col.data_ptr<int64_t>());
}

void check_csr(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val) {
  LSHX_CHECK_CPU(x);
  LSHX_CHECK_FLOAT(x);
  TORCH_CHECK(crow.scalar_type() == at::kLong, "csr_linear: crow must be int64");
  TORCH_CHECK(col.scalar_type() == at::kLong || col.scalar_type() == at::kInt, "csr_linear: col must be int32/64");
  TORCH_CHECK(val.scalar_type() == x.scalar_type(), "csr_linear: values and x dtypes differ");
  TORCH_CHECK(col.numel() == val.numel(), "csr_linear: col and val lengths differ");
}

}  // namespace

at::Tensor batch_last(const at::Tensor& x2) {
  const int64_t B = x2.size(0), Bp = (B + 7) / 8 * 8;
  auto xt = at::zeros({x2.size(1), Bp}, x2.options());
  xt.narrow(1, 0, B).copy_(x2.t());
  return xt;
}

// (rows x Bp) = CSR (rows x cols) applied to the batch-last xt (cols x Bp).
at::Tensor spmm_batch_last(const at::Tensor& xt, const at::Tensor& crow, const at::Tensor& col,
                           const at::Tensor& val) {
  const int64_t rows = crow.numel() - 1, Bp = xt.size(1);
  auto yt = at::empty({rows, Bp}, xt.options());
  AT_DISPATCH_FLOATING_TYPES(xt.scalar_type(), "lshx_csr_spmm", [&] {
    const scalar_t* X = xt.data_ptr<scalar_t>();
    const scalar_t* V = val.data_ptr<scalar_t>();
    const int64_t* R = crow.data_ptr<int64_t>();
    scalar_t* Y = yt.data_ptr<scalar_t>();
    with_index(col, [&](auto C) {
      at::parallel_for(0, rows, 16, [&](int64_t b, int64_t e) {
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (has_avx2()) return spmm_f32_avx2(X, R, C, V, Y, Bp, b, e);
        }
        spmm_rows(X, R, C, V, Y, Bp, b, e);
      });
    });
  });
  return yt;
}

at::Tensor csr_linear_cpu(const at::Tensor& x, const at::Tensor& crow_, const at::Tensor& col_,
                          const at::Tensor& val_, const c10::optional<at::Tensor>& bias) {
  check_csr(x, crow_, col_, val_);
  const int64_t out = crow_.numel() - 1, in = x.size(-1);
  auto x2 = x.reshape({-1, in});
  const int64_t B = x2.size(0);
  auto yt = spmm_batch_last(batch_last(x2), crow_.contiguous(), col_.contiguous(), val_.contiguous());
  auto y = yt.narrow(1, 0, B).t();
  if (bias.has_value() && bias->defined()) y = y + *bias;
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  return y.contiguous().reshape(sizes);
}

// (grad_x, grad_W) of csr_linear. grad_x goes through W^T in CSR form (tcrow, tcol) whose
// values are val[tperm]; grad_W is dense but computed only at the nonzeros,
// grad_W[row(p), col(p)] = sum_b grad[b, row(p)] * x[b, col(p)], and zero elsewhere (no GEMM).
std::tuple<at::Tensor, at::Tensor> csr_linear_backward_cpu(const at::Tensor& grad, const at::Tensor& x,
                                                           const at::Tensor& crow_, const at::Tensor& col_,
                                                           const at::Tensor& val_, const at::Tensor& tcrow,
                                                           const at::Tensor& tcol, const at::Tensor& tperm) {
  check_csr(x, crow_, col_, val_);
  const int64_t out = crow_.numel() - 1, in = x.size(-1);
  TORCH_CHECK(grad.size(-1) == out, "csr_linear_backward: grad has ", grad.size(-1), " features, expected ", out);
  TORCH_CHECK(tcrow.numel() == in + 1, "csr_linear_backward: the transposed structure has ", tcrow.numel() - 1,
              " rows, expected ", in);
  auto x2 = x.reshape({-1, in}), g2 = grad.reshape({-1, out});
  const int64_t B = x2.size(0);
  auto xt = batch_last(x2), gt = batch_last(g2);
  auto crow = crow_.contiguous(), col = col_.contiguous(), val = val_.contiguous();
  auto gxt = spmm_batch_last(gt, tcrow.contiguous(), tcol.contiguous(), val.index_select(0, tperm));
  auto gw = at::empty({out, in}, x.options());
  const int64_t Bp = xt.size(1);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lshx_csr_sddmm", [&] {
    const scalar_t* X = xt.data_ptr<scalar_t>();
    const scalar_t* Yg = gt.data_ptr<scalar_t>();
    const int64_t* R = crow.data_ptr<int64_t>();
    scalar_t* GW = gw.data_ptr<scalar_t>();
    with_index(col, [&](auto C) {
      at::parallel_for(0, out, 16, [&](int64_t b, int64_t e) {
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (has_avx2()) return sddmm_f32_avx2(X, Yg, R, C, GW, in, Bp, b, e);
        }
        sddmm_rows(X, Yg, R, C, GW, in, Bp, b, e);
      });
    });
  });
  return {gxt.narrow(1, 0, B).t().contiguous().reshape(x.sizes()), gw};
}

TORCH_LIBRARY_IMPL(lshx, CPU, m) {
  m.impl("csr_linear", &csr_linear_cpu);
  m.impl("csr_linear_backward", &csr_linear_backward_cpu);
}

}  // namespace lshx
