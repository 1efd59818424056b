// Argument checks of lshx::rhn_recurrence and its backward, shared by the CPU op and the CUDA
// bindings: shapes, one dtype, one device.
#pragma once
#include <ATen/ATen.h>

#include "utils.h"

namespace lshx {

inline void check_rhn_inputs(const at::Tensor& xp, const at::Tensor& s0, at::TensorList weights,
                             at::TensorList biases, const c10::optional<at::Tensor>& drop, const char* where) {
  LSHX_CHECK_FLOAT(xp);
  LSHX_CHECK_DIM(xp, 3);
  LSHX_CHECK_DIM(s0, 2);
  const int64_t B = xp.size(1), H = s0.size(1), D = static_cast<int64_t>(weights.size());
  TORCH_CHECK(D >= 1, where, ": needs at least one micro-step weight");
  TORCH_CHECK(static_cast<int64_t>(biases.size()) == D, where, ": ", D, " weights but ", biases.size(), " biases");
  TORCH_CHECK(s0.size(0) == B, where, ": s0 has batch ", s0.size(0), ", xp has ", B);
  TORCH_CHECK(xp.size(2) == 2 * H, where, ": xp has ", xp.size(2), " features, expected 2H = ", 2 * H);
  TORCH_CHECK(s0.scalar_type() == xp.scalar_type(), where, ": s0 and xp dtypes differ");
  TORCH_CHECK(s0.device() == xp.device(), where, ": s0 is on ", s0.device(), " but xp is on ", xp.device());
  for (int64_t d = 0; d < D; ++d) {
    TORCH_CHECK(weights[d].dim() == 2 && weights[d].size(0) == 2 * H && weights[d].size(1) == H, where,
                ": weights[", d, "] must be (2H, H) = (", 2 * H, ", ", H, "), got ", weights[d].sizes());
    TORCH_CHECK(biases[d].dim() == 1 && biases[d].size(0) == 2 * H, where, ": biases[", d, "] must be (2H,)");
    TORCH_CHECK(weights[d].scalar_type() == xp.scalar_type() && biases[d].scalar_type() == xp.scalar_type(), where,
                ": weights/biases and xp dtypes differ");
    TORCH_CHECK(weights[d].device() == xp.device() && biases[d].device() == xp.device(), where,
                ": weights/biases and xp devices differ");
  }
  if (drop.has_value() && drop->defined()) {
    TORCH_CHECK(drop->dim() == 2 && drop->size(0) == B && drop->size(1) == H, where, ": drop must be (B, H)");
    TORCH_CHECK(drop->scalar_type() == xp.scalar_type(), where, ": drop and xp dtypes differ");
    TORCH_CHECK(drop->device() == xp.device(), where, ": drop and xp devices differ");
  }
}

inline void check_rhn_backward_inputs(const at::Tensor& grad_out, const at::Tensor& grad_s, at::TensorList weights,
                                      const c10::optional<at::Tensor>& drop, const at::Tensor& states,
                                      const at::Tensor& gates) {
  const char* where = "rhn_recurrence_backward";
  LSHX_CHECK_FLOAT(states);
  LSHX_CHECK_DIM(states, 4);
  LSHX_CHECK_DIM(gates, 4);
  const int64_t D = states.size(0), T = states.size(1), B = states.size(2), H = states.size(3);
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == D, where, ": ", weights.size(), " weights for depth ", D);
  TORCH_CHECK(gates.size(0) == D && gates.size(1) == T && gates.size(2) == B && gates.size(3) == 2 * H, where,
              ": gates must be (D, T, B, 2H)");
  TORCH_CHECK(grad_out.dim() == 3 && grad_out.size(0) == T && grad_out.size(1) == B && grad_out.size(2) == H, where,
              ": grad_out must be (T, B, H)");
  TORCH_CHECK(grad_s.dim() == 2 && grad_s.size(0) == B && grad_s.size(1) == H, where, ": grad_s must be (B, H)");
  for (const at::Tensor* x : {&grad_out, &grad_s, &gates}) {
    TORCH_CHECK(x->scalar_type() == states.scalar_type(), where, ": dtypes differ");
    TORCH_CHECK(x->device() == states.device(), where, ": devices differ");
  }
  if (drop.has_value() && drop->defined()) {
    TORCH_CHECK(drop->sizes() == grad_s.sizes(), where, ": drop must be (B, H)");
    TORCH_CHECK(drop->scalar_type() == states.scalar_type(), where, ": drop dtype differs");
    TORCH_CHECK(drop->device() == states.device(), where, ": drop device differs");
  }
  for (int64_t d = 0; d < D; ++d) {
    TORCH_CHECK(weights[d].dim() == 2 && weights[d].size(0) == 2 * H && weights[d].size(1) == H, where, ": weights[",
                d, "] must be (2H, H)");
    TORCH_CHECK(weights[d].scalar_type() == states.scalar_type(), where, ": weight dtype differs");
    TORCH_CHECK(weights[d].device() == states.device(), where, ": weight device differs");
  }
}

}  // namespace lshx
