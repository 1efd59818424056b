// CholeskyQR2 in float64 with ATen ops only, so one implementation serves CPU and CUDA tensors
// (registered as CompositeExplicitAutograd). For a batch A (K, N, k), k <= N:
//   pass:  G = A^T A (upper blocks only: half a GEMM's work), R^T R = G (Cholesky), Q = A R^-1;
//   CholeskyQR2: two passes, A = Q2 R2 R1, and diag R = diag(R2) diag(R1): the product R2 R1
//   is never formed (log|R_ii| = log R1_ii + log R2_ii).
// In float64 the first pass holds to a condition number of about 1e8 (float32: 1e3, too
// little for a Lyapunov step at k = N). Where Cholesky breaks down, shifted CholeskyQR3
// (Fukaya, Kannan, Nakatsukasa, Yamamoto, Yanagisawa 2020): a first pass on G + s I with
// s = 11 (N k + k (k + 1)) u ||A||_F^2, then CholeskyQR2 on its Q (still A = Q R exactly: every Q
// is A times the inverse of the R's so far). Where that fails too (a rank-deficient block, e.g.
// the directions a masked-out unit annihilates), Householder. Q comes back in A's dtype.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>

#include "../utils.h"

namespace lshx {

static double tiny_of(const at::Tensor& a) {  // as lyapunov_step: log|R_ii| floored, never -inf
  return a.scalar_type() == at::kDouble ? std::numeric_limits<double>::min() : std::numeric_limits<float>::min();
}

// Below this many columns the Gram matrix is one GEMM; above, its upper blocks recursively.
constexpr int64_t kGramLeaf = 128;

// G = A^T A for a (K, N, k) batch from the upper blocks only (a symmetric rank-k update built
// from GEMMs: N k^2 multiply-adds instead of 2 N k^2), the lower triangle mirrored.
static at::Tensor gram(const at::Tensor& a) {
  const int64_t k = a.size(2);
  if (k <= kGramLeaf) return at::matmul(a.transpose(-2, -1), a);
  const int64_t h = k / 2;
  auto a1 = a.narrow(2, 0, h), a2 = a.narrow(2, h, k - h);
  auto g = at::empty({a.size(0), k, k}, a.options());
  auto g12 = at::matmul(a1.transpose(-2, -1), a2);
  g.narrow(1, 0, h).narrow(2, 0, h).copy_(gram(a1));
  g.narrow(1, 0, h).narrow(2, h, k - h).copy_(g12);
  g.narrow(1, h, k - h).narrow(2, 0, h).copy_(g12.transpose(-2, -1));
  g.narrow(1, h, k - h).narrow(2, h, k - h).copy_(gram(a2));
  return g;
}

// One CholeskyQR pass on a float64 batch: q = a R^-1 with R^T R = a^T a + diag(shift); logd =
// log R_ii. False where Cholesky or the triangular solve breaks down.
static bool chol_pass(const at::Tensor& a, const at::Tensor& shift, at::Tensor& q, at::Tensor& logd) {
  auto g = gram(a);
  if (shift.defined()) g.diagonal(0, -2, -1).add_(shift.unsqueeze(-1));
  auto res = at::linalg_cholesky_ex(g, /*upper=*/true, /*check_errors=*/false);
  if (!std::get<1>(res).eq(0).all().item<bool>()) return false;
  const auto& r = std::get<0>(res);
  q = at::linalg_solve_triangular(r, a, /*upper=*/true, /*left=*/false);
  logd = r.diagonal(0, -2, -1).log();
  return q.isfinite().all().item<bool>() && logd.isfinite().all().item<bool>();
}

// CholeskyQR2 from a, adding log R_ii of both passes into logr; false where a pass fails.
static bool cholqr2_passes(const at::Tensor& a, at::Tensor& q, at::Tensor& logr) {
  at::Tensor q1, d1, d2;
  if (!chol_pass(a, at::Tensor(), q1, d1) || !chol_pass(q1, at::Tensor(), q, d2)) return false;
  logr = logr.defined() ? logr + d1 + d2 : d1 + d2;
  return true;
}

std::tuple<at::Tensor, at::Tensor> cholqr2(const at::Tensor& a_) {
  LSHX_CHECK_DIM(a_, 3);
  LSHX_CHECK_FLOAT(a_);
  TORCH_CHECK(a_.size(2) <= a_.size(1), "cholqr2: k must not exceed N");
  auto a = a_.to(at::kDouble);
  at::Tensor q, logr;
  if (cholqr2_passes(a, q, logr)) return {q.to(a_.scalar_type()).contiguous(), logr.to(a_.scalar_type())};
  // shifted CholeskyQR3: a shifted first pass makes the Gram matrix numerically definite
  const double n = static_cast<double>(a.size(1)), k = static_cast<double>(a.size(2));
  const double u = std::numeric_limits<double>::epsilon() / 2;
  auto shift = a.square().sum({1, 2}).mul(11.0 * (n * k + k * (k + 1)) * u);
  at::Tensor q1, d1;
  logr = at::Tensor();
  if (chol_pass(a, shift, q1, d1)) {
    logr = d1;
    if (cholqr2_passes(q1, q, logr)) return {q.to(a_.scalar_type()).contiguous(), logr.to(a_.scalar_type())};
  }
  auto qr = at::linalg_qr(a_, "reduced");  // rank-deficient: Householder, in the input's dtype
  return {std::get<0>(qr).contiguous(), std::get<1>(qr).diagonal(0, -2, -1).abs().clamp_min(tiny_of(a_)).log()};
}

TORCH_LIBRARY_IMPL(lshx, CompositeExplicitAutograd, m) { m.impl("cholqr2", &cholqr2); }

}  // namespace lshx
