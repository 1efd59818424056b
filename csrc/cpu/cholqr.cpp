// CholeskyQR2 with ATen ops only, so one implementation serves CPU and CUDA tensors
// (registered as CompositeExplicitAutograd). Q1 R1 = A, Q R2 = Q1, R = R2 R1.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>

#include "../utils.h"

namespace lshx {

static double tiny_of(const at::Tensor& a) {  // as lyapunov_step: log|R_ii| floored, never -inf
  return a.scalar_type() == at::kDouble ? std::numeric_limits<double>::min() : std::numeric_limits<float>::min();
}

static std::tuple<at::Tensor, at::Tensor, bool> chol_pass(const at::Tensor& a) {
  auto g = at::matmul(a.transpose(-2, -1), a);  // k x k Gram matrices
  auto res = at::linalg_cholesky_ex(g, /*upper=*/true);
  auto r = std::get<0>(res);
  const bool ok = std::get<1>(res).eq(0).all().item<bool>();
  auto q = at::linalg_solve_triangular(r, a, /*upper=*/true, /*left=*/false);  // a R^-1
  return {q, r, ok};
}

std::tuple<at::Tensor, at::Tensor> cholqr2(const at::Tensor& a) {
  LSHX_CHECK_DIM(a, 3);
  TORCH_CHECK(a.size(2) <= a.size(1), "cholqr2: k must not exceed N");
  auto p1 = chol_pass(a);
  bool ok = std::get<2>(p1);
  if (ok) {
    auto p2 = chol_pass(std::get<0>(p1));
    ok = std::get<2>(p2);
    if (ok) {
      auto r = at::matmul(std::get<1>(p2), std::get<1>(p1));
      auto logr = r.diagonal(0, -2, -1).abs().clamp_min(tiny_of(a)).log();
      if (logr.isfinite().all().item<bool>()) return {std::get<0>(p2).contiguous(), logr};
    }
  }
  auto qr = at::linalg_qr(a, "reduced");  // ill-conditioned: Householder
  return {std::get<0>(qr).contiguous(), std::get<1>(qr).diagonal(0, -2, -1).abs().clamp_min(tiny_of(a)).log()};
}

TORCH_LIBRARY_IMPL(lshx, CompositeExplicitAutograd, m) { m.impl("cholqr2", &cholqr2); }

}  // namespace lshx
