// ATen bindings of the CUDA kernels (float32 only).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <torch/library.h>

#include "../utils.h"
#include "kernels.h"

namespace lshx {

#define LSHX_CUDA_OK(expr)                                                     \
  do {                                                                         \
    cudaError_t err_ = (expr);                                                 \
    TORCH_CHECK(err_ == cudaSuccess, "lshx CUDA error: ", cudaGetErrorString(err_)); \
  } while (0)
#define LSHX_CHECK_F32(x) TORCH_CHECK((x).scalar_type() == at::kFloat, #x " must be float32 on CUDA")

static at::Tensor apply_mask_cuda(const at::Tensor& weight, const at::Tensor& mask) {
  LSHX_CHECK_SAME_SHAPE(weight, mask);
  LSHX_CHECK_F32(weight);
  auto w = weight.contiguous();
  auto m = mask.to(at::kBool).contiguous();
  auto out = at::empty_like(w);
  LSHX_CUDA_OK(cuda::apply_mask(w.data_ptr<float>(), m.data_ptr<bool>(), out.data_ptr<float>(), w.numel(),
                                at::cuda::getCurrentCUDAStream()));
  return out;
}

static at::Tensor masked_linear_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
                                     const c10::optional<at::Tensor>& bias) {
  LSHX_CHECK_CUDA(x);
  return linear_masked(x, apply_mask_cuda(weight, mask), bias);
}

static std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_linear_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
    bool has_bias) {
  return linear_masked_backward(grad, x, apply_mask_cuda(weight, mask), has_bias);
}

static at::Tensor row_combine_cuda(const at::Tensor& w_, const at::Tensor& coef_, const at::Tensor& diag_) {
  LSHX_CHECK_F32(w_);
  const int64_t K = coef_.size(0), G = coef_.size(1), H = coef_.size(2), M = w_.size(1);
  TORCH_CHECK(w_.size(0) == G * H, "row_combine: w rows must be G*H");
  const bool has_diag = diag_.defined() && diag_.numel() > 0;
  TORCH_CHECK(!has_diag || M == H, "row_combine: diag needs a square block");
  auto w = w_.contiguous(), coef = coef_.contiguous();
  auto diag = has_diag ? diag_.contiguous() : diag_;
  auto out = at::empty({K, H, M}, w.options());
  LSHX_CUDA_OK(cuda::row_combine(w.data_ptr<float>(), coef.data_ptr<float>(),
                                 has_diag ? diag.data_ptr<float>() : nullptr, out.data_ptr<float>(), K, G, H, M,
                                 at::cuda::getCurrentCUDAStream()));
  return out;
}

static std::tuple<at::Tensor, at::Tensor> lyapunov_step_cuda(const at::Tensor& jb) {
  LSHX_CHECK_F32(jb);
  auto qr = at::linalg_qr(jb, "reduced");
  auto r = std::get<1>(qr).contiguous();
  auto out = at::empty({jb.size(0), jb.size(2)}, jb.options());
  LSHX_CUDA_OK(cuda::log_abs_diag(r.data_ptr<float>(), out.data_ptr<float>(), r.size(0), r.size(2),
                                  at::cuda::getCurrentCUDAStream()));
  return {std::get<0>(qr).contiguous(), out};
}

static at::Tensor csr_linear_cuda(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col_,
                                  const at::Tensor& val, const c10::optional<at::Tensor>& bias) {
  LSHX_CHECK_CUDA(x);
  LSHX_CHECK_F32(x);
  const int64_t out = crow.numel() - 1, in = x.size(-1);
  auto col = col_.to(at::kLong);  // the CUDA kernel reads int64 indices
  auto x2 = x.reshape({-1, in}).contiguous();
  auto y = at::empty({x2.size(0), out}, x.options());
  const bool has_bias = bias.has_value() && bias->defined();
  auto b = has_bias ? bias->contiguous() : at::Tensor();
  LSHX_CUDA_OK(cuda::csr_linear(x2.data_ptr<float>(), crow.contiguous().data_ptr<int64_t>(),
                                col.contiguous().data_ptr<int64_t>(), val.contiguous().data_ptr<float>(),
                                has_bias ? b.data_ptr<float>() : nullptr, y.data_ptr<float>(), x2.size(0), in, out,
                                at::cuda::getCurrentCUDAStream()));
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  return y.reshape(sizes);
}

TORCH_LIBRARY_IMPL(lshx, CUDA, m) {
  m.impl("csr_linear", &csr_linear_cuda);
  m.impl("masked_linear", &masked_linear_cuda);
  m.impl("masked_linear_backward", &masked_linear_backward_cuda);
  m.impl("row_combine", &row_combine_cuda);
  m.impl("lyapunov_step", &lyapunov_step_cuda);
}

}  // namespace lshx
