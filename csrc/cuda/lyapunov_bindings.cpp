// ATen bindings of the Lyapunov-spectrum CUDA kernels (csrc/cuda/lyapunov.cu, householder.cu), float32.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda_checks.h"

namespace lshx {

static at::Tensor row_combine_cuda(const at::Tensor& w_, const at::Tensor& coef_, const at::Tensor& diag_) {
  LSHX_CHECK_CUDA(w_);
  LSHX_CHECK_F32(w_);
  LSHX_CHECK_DIM(w_, 2);
  LSHX_CHECK_DIM(coef_, 3);
  LSHX_CHECK_SAME_DEVICE(coef_, w_);
  TORCH_CHECK(coef_.scalar_type() == w_.scalar_type(), "row_combine: coef and w dtypes differ");
  const int64_t K = coef_.size(0), G = coef_.size(1), H = coef_.size(2), M = w_.size(1);
  TORCH_CHECK(w_.size(0) == G * H, "row_combine: w has ", w_.size(0), " rows, expected G*H = ", G * H);
  const bool has_diag = diag_.defined() && diag_.numel() > 0;
  if (has_diag) {
    LSHX_CHECK_SAME_DEVICE(diag_, w_);
    TORCH_CHECK(diag_.scalar_type() == w_.scalar_type(), "row_combine: diag and w dtypes differ");
    TORCH_CHECK(M == H && diag_.dim() == 2 && diag_.size(0) == K && diag_.size(1) == H,
                "row_combine: diag needs a square block and shape (K, H)");
  }
  LSHX_DEVICE_GUARD(w_);
  auto w = w_.contiguous(), coef = coef_.contiguous();
  auto diag = has_diag ? diag_.contiguous() : diag_;
  auto out = at::empty({K, H, M}, w.options());
  LSHX_CUDA_OK(cuda::row_combine(w.data_ptr<float>(), coef.data_ptr<float>(),
                                 has_diag ? diag.data_ptr<float>() : nullptr, out.data_ptr<float>(), K, G, H, M,
                                 c10::cuda::getCurrentCUDAStream()));
  return out;
}

static std::tuple<at::Tensor, at::Tensor> lyapunov_step_cuda(const at::Tensor& jb) {
  LSHX_CHECK_CUDA(jb);
  LSHX_CHECK_F32(jb);
  LSHX_CHECK_DIM(jb, 3);
  TORCH_CHECK(jb.size(2) <= jb.size(1), "lyapunov_step: k must not exceed N");
  LSHX_DEVICE_GUARD(jb);
  auto qr = at::linalg_qr(jb, "reduced");
  auto r = std::get<1>(qr).contiguous();
  auto out = at::empty({jb.size(0), jb.size(2)}, jb.options());
  LSHX_CUDA_OK(cuda::log_abs_diag(r.data_ptr<float>(), out.data_ptr<float>(), r.size(0), r.size(2),
                                  c10::cuda::getCurrentCUDAStream()));
  return {std::get<0>(qr).contiguous(), out};
}

static std::tuple<at::Tensor, at::Tensor> householder_qr_cuda(const at::Tensor& jb) {
  LSHX_CHECK_CUDA(jb);
  LSHX_CHECK_F32(jb);
  TORCH_CHECK(jb.dim() == 3 && jb.size(2) <= jb.size(1), "householder_qr: expected (K, N, k) with k <= N");
  LSHX_DEVICE_GUARD(jb);
  const int64_t K = jb.size(0), N = jb.size(1), k = jb.size(2);
  auto a = jb.contiguous().clone();
  auto tau = at::empty({K, k}, jb.options());
  auto q = at::empty_like(a);
  auto logr = at::empty({K, k}, jb.options());
  LSHX_CUDA_OK(cuda::householder_qr(a.data_ptr<float>(), tau.data_ptr<float>(), q.data_ptr<float>(),
                                    logr.data_ptr<float>(), K, N, k, c10::cuda::getCurrentCUDAStream()));
  return {q, logr};
}

TORCH_LIBRARY_IMPL(lshx, CUDA, m) {
  m.impl("row_combine", &row_combine_cuda);
  m.impl("lyapunov_step", &lyapunov_step_cuda);
  m.impl("householder_qr", &householder_qr_cuda);
}

}  // namespace lshx
