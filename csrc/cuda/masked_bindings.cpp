// ATen bindings of the masked-linear CUDA kernels (csrc/cuda/masked_linear.cu), float32.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda_checks.h"

namespace lshx {

static at::Tensor apply_mask_cuda(const at::Tensor& weight, const at::Tensor& mask) {
  LSHX_CHECK_CUDA(weight);
  LSHX_CHECK_SAME_SHAPE(weight, mask);
  LSHX_CHECK_SAME_DEVICE(mask, weight);
  LSHX_CHECK_F32(weight);
  LSHX_DEVICE_GUARD(weight);
  auto w = weight.contiguous();
  auto m = mask.to(at::kBool).contiguous();
  auto out = at::empty_like(w);
  LSHX_CUDA_OK(cuda::apply_mask(w.data_ptr<float>(), m.data_ptr<bool>(), out.data_ptr<float>(), w.numel(),
                                c10::cuda::getCurrentCUDAStream()));
  return out;
}

static at::Tensor masked_linear_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
                                     const c10::optional<at::Tensor>& bias) {
  LSHX_CHECK_CUDA(x);
  LSHX_CHECK_SAME_DEVICE(weight, x);
  TORCH_CHECK(weight.dim() == 2, "masked_linear: weight must have 2 dims, got ", weight.dim());
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), "masked_linear: x and weight dtypes differ");
  LSHX_DEVICE_GUARD(x);
  return linear_masked(x, apply_mask_cuda(weight, mask), bias);
}

static std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_linear_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
    bool has_bias) {
  LSHX_CHECK_SAME_DEVICE(grad, x);
  LSHX_CHECK_SAME_DEVICE(weight, x);
  LSHX_DEVICE_GUARD(x);
  return linear_masked_backward(grad, x, apply_mask_cuda(weight, mask), has_bias);
}

TORCH_LIBRARY_IMPL(lshx, CUDA, m) {
  m.impl("masked_linear", &masked_linear_cuda);
  m.impl("masked_linear_backward", &masked_linear_backward_cuda);
}

}  // namespace lshx
