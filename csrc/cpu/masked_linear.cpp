// CPU kernels of lshx::masked_linear and its backward.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../utils.h"

namespace lshx {

// weight * mask in one pass; the mask may be bool or floating.
at::Tensor apply_mask_cpu(const at::Tensor& weight, const at::Tensor& mask) {
  LSHX_CHECK_SAME_SHAPE(weight, mask);
  auto w = weight.contiguous();
  auto m = mask.to(at::kBool).contiguous();
  auto out = at::empty_like(w);
  const bool* mp = m.data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "apply_mask_cpu", [&] {
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, w.numel(), 1 << 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) op[i] = wp[i] * static_cast<scalar_t>(mp[i]);  // branchless: vectorizes
    });
  });
  return out;
}

at::Tensor masked_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
                             const c10::optional<at::Tensor>& bias) {
  LSHX_CHECK_CPU(x);
  LSHX_CHECK_FLOAT(weight);
  LSHX_CHECK_DIM(weight, 2);
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), "masked_linear: x and weight dtypes differ");
  return linear_masked(x, apply_mask_cpu(weight, mask), bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_linear_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
    bool has_bias) {
  return linear_masked_backward(grad, x, apply_mask_cpu(weight, mask), has_bias);
}

TORCH_LIBRARY_IMPL(lshx, CPU, m) {
  m.impl("masked_linear", &masked_linear_cpu);
  m.impl("masked_linear_backward", &masked_linear_backward_cpu);
}

}  // namespace lshx
