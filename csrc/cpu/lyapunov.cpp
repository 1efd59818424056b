// CPU kernels of the Lyapunov step: Jacobian blocks from gate-scaled weight rows (O(G*H*M)
// elementwise, no autograd, no diag_embed) and the batched QR with log|diag R|.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>

#include "../utils.h"

namespace lshx {

at::Tensor row_combine_cpu(const at::Tensor& w_, const at::Tensor& coef_, const at::Tensor& diag_) {
  LSHX_CHECK_CPU(w_);
  LSHX_CHECK_FLOAT(w_);
  LSHX_CHECK_DIM(w_, 2);
  LSHX_CHECK_DIM(coef_, 3);
  const int64_t K = coef_.size(0), G = coef_.size(1), H = coef_.size(2), M = w_.size(1);
  TORCH_CHECK(w_.size(0) == G * H, "row_combine: w has ", w_.size(0), " rows, expected G*H = ", G * H);
  TORCH_CHECK(coef_.scalar_type() == w_.scalar_type(), "row_combine: coef and w dtypes differ");
  const bool has_diag = diag_.defined() && diag_.numel() > 0;
  if (has_diag) {
    TORCH_CHECK(M == H && diag_.size(0) == K && diag_.size(1) == H, "row_combine: diag needs a square block");
  }
  auto w = w_.contiguous(), coef = coef_.contiguous();
  auto diag = has_diag ? diag_.contiguous() : diag_;
  auto out = at::empty({K, H, M}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "row_combine_cpu", [&] {
    const scalar_t* W = w.data_ptr<scalar_t>();
    const scalar_t* C = coef.data_ptr<scalar_t>();
    const scalar_t* Dg = has_diag ? diag.data_ptr<scalar_t>() : nullptr;
    scalar_t* O = out.data_ptr<scalar_t>();
    at::parallel_for(0, K * H, 4, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t s = r / H, j = r % H;
        scalar_t* o = O + r * M;
        const scalar_t a0 = C[(s * G) * H + j];
        const scalar_t* w0 = W + j * M;
        for (int64_t m = 0; m < M; ++m) o[m] = a0 * w0[m];
        for (int64_t g = 1; g < G; ++g) {
          const scalar_t a = C[(s * G + g) * H + j];
          const scalar_t* wg = W + (g * H + j) * M;
          for (int64_t m = 0; m < M; ++m) o[m] += a * wg[m];
        }
        if (Dg) o[j] += Dg[r];
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> lyapunov_step_cpu(const at::Tensor& jb) {
  LSHX_CHECK_DIM(jb, 3);
  TORCH_CHECK(jb.size(2) <= jb.size(1), "lyapunov_step: k must not exceed N");
  auto qr = at::linalg_qr(jb, "reduced");
  // |R_ii| = 0 (a direction annihilated, e.g. a layer whose weights were all pruned) gives the
  // smallest finite log instead of -inf: the exponent is very negative, not undefined.
  const double tiny = jb.scalar_type() == at::kDouble ? std::numeric_limits<double>::min()
                                                      : std::numeric_limits<float>::min();
  auto logr = std::get<1>(qr).diagonal(0, -2, -1).abs().clamp_min(tiny).log();
  return {std::get<0>(qr).contiguous(), logr};  // LAPACK gives column-major Q
}

TORCH_LIBRARY_IMPL(lshx, CPU, m) {
  m.impl("row_combine", &row_combine_cpu);
  m.impl("lyapunov_step", &lyapunov_step_cpu);
}

}  // namespace lshx
