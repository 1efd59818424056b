// ATen bindings of the RHN recurrence CUDA kernels (csrc/cuda/rhn.cu), float32.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../rhn_checks.h"
#include "../recurrence_shared.h"
#include "cuda_checks.h"

namespace lshx {

// The RHN recurrence (layout and arithmetic: csrc/cpu/rhn_recurrence.cpp): per micro-step one
// cuBLAS GEMM and one gate kernel (csrc/cuda/rhn.cu), forward and backward; each weight
// gradient is one GEMM over all steps at the end.
static void check_rhn_cuda(const at::Tensor& xp, const at::Tensor& s0, at::TensorList weights, at::TensorList biases,
                           const c10::optional<at::Tensor>& drop) {
  LSHX_CHECK_CUDA(xp);
  LSHX_CHECK_F32(xp);
  check_rhn_inputs(xp, s0, weights, biases, drop, "rhn_recurrence");  // shapes, dtypes, one device
}

static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rhn_recurrence_cuda(
    const at::Tensor& xp_, const at::Tensor& s0_, at::TensorList weights, at::TensorList biases,
    const c10::optional<at::Tensor>& drop_) {
  check_rhn_cuda(xp_, s0_, weights, biases, drop_);
  LSHX_DEVICE_GUARD(xp_);
  const int64_t T = xp_.size(0), B = xp_.size(1), H = s0_.size(1), D = static_cast<int64_t>(weights.size());
  const bool has_drop = drop_.has_value() && drop_->defined();
  auto xp = xp_.contiguous(), s0 = s0_.contiguous();
  auto drop = has_drop ? drop_->contiguous() : at::Tensor();
  auto opts = xp.options();
  std::vector<at::Tensor> wt(D), bias(D);
  for (int64_t d = 0; d < D; ++d) {
    wt[d] = weights[d].t().contiguous();
    bias[d] = biases[d].contiguous();
  }
  auto states = at::empty({D, T, B, H}, opts), gates = at::empty({D, T, B, 2 * H}, opts);
  auto out = at::empty({T, B, H}, opts);
  if (T == 0) return {out, s0.clone(), states, gates};
  auto pre = at::empty({B, 2 * H}, opts);
  auto sin = has_drop ? s0 * drop : at::Tensor();
  states[0][0].copy_(s0);
  auto stream = c10::cuda::getCurrentCUDAStream();
  float* S = states.data_ptr<float>();
  float* G = gates.data_ptr<float>();
  float* O = out.data_ptr<float>();
  const float* X = xp.data_ptr<float>();
  const float* M = has_drop ? drop.data_ptr<float>() : nullptr;
  const int64_t n = B * H;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t d = 0; d < D; ++d) {
      const int64_t k = d * T + t;
      at::mm_out(pre, has_drop ? sin : states[d][t], wt[d]);
      float* next = nullptr;
      float* s_out = nullptr;
      if (d + 1 < D) {
        next = S + ((d + 1) * T + t) * n;
      } else {
        s_out = O + t * n;
        next = t + 1 < T ? S + (t + 1) * n : s_out;
        if (next == s_out) s_out = nullptr;
      }
      const bool last = d + 1 == D && t + 1 == T;
      LSHX_CUDA_OK(cuda::rhn_forward_step(pre.data_ptr<float>(), d == 0 ? X + t * 2 * n : nullptr,
                                          bias[d].data_ptr<float>(), S + k * n, M, G + k * 2 * n, next, s_out,
                                          has_drop && !last ? sin.data_ptr<float>() : nullptr, B, H, stream));
    }
  }
  return {out, out[T - 1].clone(), states, gates};
}

static std::tuple<at::Tensor, at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>>
rhn_recurrence_backward_cuda(const at::Tensor& grad_out_, const at::Tensor& grad_s_, at::TensorList weights,
                             const c10::optional<at::Tensor>& drop_, const at::Tensor& states_,
                             const at::Tensor& gates_) {
  LSHX_CHECK_CUDA(states_);
  LSHX_CHECK_F32(states_);
  check_rhn_backward_inputs(grad_out_, grad_s_, weights, drop_, states_, gates_);  // shapes, dtypes, one device
  LSHX_DEVICE_GUARD(states_);
  const int64_t D = states_.size(0), T = states_.size(1), B = states_.size(2), H = states_.size(3);
  const bool has_drop = drop_.has_value() && drop_->defined();
  auto states = states_.contiguous(), gates = gates_.contiguous(), grad_out = grad_out_.contiguous();
  auto drop = has_drop ? drop_->contiguous() : at::Tensor();
  RhnBackward bw(grad_out, grad_s_, weights, states);
  if (T > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    const float* S = states.data_ptr<float>();
    const float* Gt = gates.data_ptr<float>();
    const float* GO = grad_out.data_ptr<float>();
    const float* M = has_drop ? drop.data_ptr<float>() : nullptr;
    const int64_t n = B * H;
    bw.walk(T, [&](int64_t t, int64_t d, bool first) {
      const int64_t k = d * T + t;
      const float* gadd = (d == D - 1 && t < T - 1) ? GO + t * n : nullptr;
      LSHX_CUDA_OK(cuda::rhn_backward_step(bw.carry.data_ptr<float>(), first ? nullptr : bw.tmp.data_ptr<float>(), M,
                                           gadd, Gt + k * 2 * n, S + k * n, bw.gpre[d].data_ptr<float>() + t * 2 * n,
                                           B, H, stream));
    });
    bw.carry = has_drop ? bw.carry.add_(bw.tmp * drop) : bw.carry.add_(bw.tmp);
  }
  rhn_weight_grads(bw.gpre, states, drop, bw.gw, bw.gb);
  return {bw.gpre[0], bw.carry, bw.gw, bw.gb};
}

TORCH_LIBRARY_IMPL(lshx, CUDA, m) {
  m.impl("rhn_recurrence", &rhn_recurrence_cuda);
  m.impl("rhn_recurrence_backward", &rhn_recurrence_backward_cuda);
}

}  // namespace lshx
