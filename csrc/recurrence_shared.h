// What the CPU ops and the CUDA bindings of the recurrences share: the sparse LSTM
// recurrence's structure checks, and the RHN backward's tail (each weight gradient from one
// GEMM over all steps, each bias gradient by a sum).
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "utils.h"

namespace lshx {

// xproj (T, B, 4H), h0 and c0 (B, H), W_hh (4H x H) in CSR (crow int64, col int32/64).
inline void check_lstm_recurrence(const at::Tensor& xproj, const at::Tensor& h0, const at::Tensor& c0,
                                  const at::Tensor& crow, const at::Tensor& col) {
  LSHX_CHECK_DIM(xproj, 3);
  const int64_t B = xproj.size(1), H = h0.size(-1);
  TORCH_CHECK(xproj.size(2) == 4 * H, "lstm_recurrence: xproj has ", xproj.size(2), " features, expected 4H = ",
              4 * H);
  TORCH_CHECK(h0.dim() == 2 && h0.sizes() == c0.sizes() && h0.size(0) == B,
              "lstm_recurrence: h0 and c0 must be (B, H) with B = ", B);
  TORCH_CHECK(crow.numel() == 4 * H + 1, "lstm_recurrence: W_hh must have 4H rows");
  TORCH_CHECK(crow.scalar_type() == at::kLong, "lstm_recurrence: crow must be int64");
  TORCH_CHECK(col.scalar_type() == at::kLong || col.scalar_type() == at::kInt,
              "lstm_recurrence: col must be int32/64");
}

// The RHN backward's working set: contiguous weights, a pre-activation gradient buffer per
// depth, the state gradient carried backwards (starting from grad_s and the last output's
// gradient) and a (B, H) scratch for the state gradient through W_d.
struct RhnBackward {
  std::vector<at::Tensor> w, gpre, gw, gb;
  at::Tensor carry, tmp;
  RhnBackward(const at::Tensor& grad_out, const at::Tensor& grad_s, at::TensorList weights, const at::Tensor& states) {
    const int64_t D = states.size(0), T = states.size(1), B = states.size(2), H = states.size(3);
    w.resize(D), gpre.resize(D), gw.resize(D), gb.resize(D);
    for (int64_t d = 0; d < D; ++d) {
      w[d] = weights[d].contiguous();
      gpre[d] = at::empty({T, B, 2 * H}, states.options());
    }
    carry = (grad_s + (T > 0 ? grad_out[T - 1] : at::zeros_like(grad_s))).contiguous();
    tmp = at::empty({B, H}, states.options());
  }
  // The micro-steps in reverse (t = T-1..0, d = D-1..0): gates(t, d, first) writes gpre[d][t]
  // from the carried state gradient and tmp (the device's gate kernel; tmp is unset when
  // first), then the state gradient goes through W_d into tmp.
  template <typename Gates>
  void walk(int64_t T, Gates gates) {
    const int64_t D = static_cast<int64_t>(w.size());
    bool first = true;
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t d = D - 1; d >= 0; --d) {
        gates(t, d, first);
        first = false;
        at::mm_out(tmp, gpre[d][t], w[d]);  // the state gradient through W_d
      }
    }
  }
};

// The RHN backward's last step: gw[d] = gpre[d]^T @ (states[d] * drop) over all T*B rows and
// gb[d] = the column sums of gpre[d], for every depth d (drop undefined: no dropout).
inline void rhn_weight_grads(const std::vector<at::Tensor>& gpre, const at::Tensor& states, const at::Tensor& drop,
                             std::vector<at::Tensor>& gw, std::vector<at::Tensor>& gb) {
  const int64_t D = states.size(0), T = states.size(1), B = states.size(2), H = states.size(3);
  for (int64_t d = 0; d < D; ++d) {
    auto g2 = gpre[d].view({T * B, 2 * H});
    auto sd = drop.defined() ? states[d] * drop : states[d];
    gw[d] = at::mm(g2.t(), sd.reshape({T * B, H}));
    gb[d] = g2.sum(0);
  }
}

}  // namespace lshx
