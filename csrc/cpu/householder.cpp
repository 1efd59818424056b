// Batched Householder QR, the algorithm of the CUDA kernel (csrc/cuda/householder.cu) on
// the CPU: unblocked, in place on a row-major (N x k) copy of each sample, the reduced Q
// formed by applying the reflectors backwards to [I; 0]. Returns Q and log|R_jj| floored at
// the dtype's smallest normal number. Its purpose is to pin the kernel's arithmetic down
// against torch.linalg.qr in the tests; LAPACK (lyapunov_step) is faster on the CPU.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../utils.h"

namespace lshx {
namespace {

// m[j:, c] -= tau * v * (v . m[j:, c]) for the reflector v in column j of a (v[0] = 1 implicit).
template <typename scalar_t>
void reflect_column(const scalar_t* a, scalar_t* m, int64_t N, int64_t k, int64_t j, int64_t c, scalar_t tau) {
  scalar_t w = m[j * k + c];
  for (int64_t r = j + 1; r < N; ++r) w += a[r * k + j] * m[r * k + c];
  w *= tau;
  m[j * k + c] -= w;
  for (int64_t r = j + 1; r < N; ++r) m[r * k + c] -= w * a[r * k + j];
}

template <typename scalar_t>
void householder_one(scalar_t* a, scalar_t* q, scalar_t* logr, int64_t N, int64_t k) {
  const scalar_t tiny = std::numeric_limits<scalar_t>::min();
  std::vector<scalar_t> tau(k, 0);
  for (int64_t j = 0; j < k; ++j) {
    // the sum of squares in double, as the CUDA kernel: a float one underflows below ~1e-19
    double norm2 = 0;
    for (int64_t r = j; r < N; ++r) norm2 += static_cast<double>(a[r * k + j]) * a[r * k + j];
    const scalar_t x0 = a[j * k + j], norm = static_cast<scalar_t>(std::sqrt(norm2));
    if (norm == 0) {
      logr[j] = std::log(tiny);
      continue;  // tau[j] = 0: no reflection
    }
    const scalar_t alpha = x0 > 0 ? -norm : norm, v0 = x0 - alpha;
    tau[j] = -v0 / alpha;
    a[j * k + j] = alpha;
    logr[j] = std::log(std::max(std::abs(alpha), tiny));
    for (int64_t r = j + 1; r < N; ++r) a[r * k + j] /= v0;
    for (int64_t c = j + 1; c < k; ++c) reflect_column(a, a, N, k, j, c, tau[j]);
  }
  for (int64_t i = 0; i < N * k; ++i) q[i] = (i / k == i % k) ? scalar_t(1) : scalar_t(0);
  for (int64_t j = k - 1; j >= 0; --j) {
    if (tau[j] == 0) continue;
    for (int64_t c = j; c < k; ++c) reflect_column(a, q, N, k, j, c, tau[j]);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> householder_qr_cpu(const at::Tensor& jb) {
  LSHX_CHECK_CPU(jb);
  LSHX_CHECK_FLOAT(jb);
  LSHX_CHECK_DIM(jb, 3);
  const int64_t K = jb.size(0), N = jb.size(1), k = jb.size(2);
  TORCH_CHECK(k <= N, "householder_qr: k (", k, ") must not exceed N (", N, ")");
  auto a = jb.contiguous().clone();
  auto q = at::empty_like(a);
  auto logr = at::empty({K, k}, jb.options());
  AT_DISPATCH_FLOATING_TYPES(jb.scalar_type(), "householder_qr_cpu", [&] {
    scalar_t* A = a.data_ptr<scalar_t>();
    scalar_t* Q = q.data_ptr<scalar_t>();
    scalar_t* L = logr.data_ptr<scalar_t>();
    at::parallel_for(0, K, 1, [&](int64_t b, int64_t e) {
      for (int64_t s = b; s < e; ++s) householder_one(A + s * N * k, Q + s * N * k, L + s * k, N, k);
    });
  });
  return {q, logr};
}

TORCH_LIBRARY_IMPL(lshx, CPU, m) { m.impl("householder_qr", &householder_qr_cpu); }

}  // namespace lshx
