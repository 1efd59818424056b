// Small CHECK helpers shared by the CPU and CUDA bindings.
#pragma once
#include <ATen/ATen.h>
#include <torch/types.h>

#include <tuple>

#define LSHX_CHECK_CPU(x) TORCH_CHECK((x).device().is_cpu(), #x " must be a CPU tensor")
#define LSHX_CHECK_CUDA(x) TORCH_CHECK((x).device().is_cuda(), #x " must be a CUDA tensor")
#define LSHX_CHECK_FLOAT(x) \
  TORCH_CHECK((x).scalar_type() == at::kFloat || (x).scalar_type() == at::kDouble, \
              #x " must be float32 or float64, got ", (x).scalar_type())
#define LSHX_CHECK_DIM(x, d) TORCH_CHECK((x).dim() == (d), #x " must have ", d, " dims, got ", (x).dim())
#define LSHX_CHECK_SAME_SHAPE(a, b) \
  TORCH_CHECK((a).sizes() == (b).sizes(), #a " and " #b " must have the same shape, got ", (a).sizes(), " and ", (b).sizes())

namespace lshx {

// y = x @ we^T + bias for an already-masked weight `we` (any leading dims of x).
inline at::Tensor linear_masked(const at::Tensor& x, const at::Tensor& we, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.size(-1) == we.size(1), "masked_linear: x has ", x.size(-1), " features, weight expects ",
              we.size(1));
  auto x2 = x.reshape({-1, we.size(1)});
  at::Tensor y = bias.has_value() && bias->defined() ? at::addmm(*bias, x2, we.t()) : at::mm(x2, we.t());
  auto sizes = x.sizes().vec();
  sizes.back() = we.size(0);
  return y.reshape(sizes);
}

// (grad_x, dense grad_w, grad_b) of linear_masked; grad_w is not masked on purpose.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_masked_backward(const at::Tensor& grad,
                                                                           const at::Tensor& x,
                                                                           const at::Tensor& we, bool has_bias) {
  auto g2 = grad.reshape({-1, we.size(0)});
  auto x2 = x.reshape({-1, we.size(1)});
  return {at::mm(g2, we).reshape(x.sizes()), at::mm(g2.t(), x2), has_bias ? g2.sum(0) : at::Tensor()};
}

}  // namespace lshx
