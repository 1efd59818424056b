// The recurrence of one sparse LSTM layer with W_hh in CSR form, all T steps in one call:
// the algorithm of the persistent CUDA kernel (csrc/cuda/lstm_persistent.cu) on the CPU,
// parallel over hidden units within a step. Inference only (no autograd).
//
// xproj (T, B, 4H) = x_t @ W_ih^T + b_ih + b_hh (gate order i, f, g, o); W_hh (4H x H) in
// CSR (crow, col, val); h0, c0 (B, H). Returns out (T, B, H), h_T, c_T.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "../utils.h"

namespace lshx {

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_recurrence_cpu(const at::Tensor& xproj_, const at::Tensor& h0_,
                                                                   const at::Tensor& c0_, const at::Tensor& crow_,
                                                                   const at::Tensor& col_, const at::Tensor& val_) {
  LSHX_CHECK_CPU(xproj_);
  LSHX_CHECK_FLOAT(xproj_);
  LSHX_CHECK_DIM(xproj_, 3);
  const int64_t T = xproj_.size(0), B = xproj_.size(1), H = h0_.size(-1);
  TORCH_CHECK(xproj_.size(2) == 4 * H, "lstm_recurrence: xproj has ", xproj_.size(2), " features, expected 4H = ",
              4 * H);
  TORCH_CHECK(h0_.sizes() == c0_.sizes() && h0_.size(0) == B, "lstm_recurrence: h0 and c0 must be (B, H)");
  TORCH_CHECK(crow_.numel() == 4 * H + 1, "lstm_recurrence: W_hh must have 4H rows");
  TORCH_CHECK(crow_.scalar_type() == at::kLong, "lstm_recurrence: crow must be int64");
  TORCH_CHECK(val_.scalar_type() == xproj_.scalar_type(), "lstm_recurrence: values and xproj dtypes differ");
  auto xproj = xproj_.contiguous(), crow = crow_.contiguous(), col = col_.to(at::kLong).contiguous();
  auto val = val_.contiguous();
  auto out = at::empty({T, B, H}, xproj.options());
  auto h = h0_.contiguous().clone(), c = c0_.contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(xproj.scalar_type(), "lstm_recurrence_cpu", [&] {
    const scalar_t* X = xproj.data_ptr<scalar_t>();
    const scalar_t* V = val.data_ptr<scalar_t>();
    const int64_t* R = crow.data_ptr<int64_t>();
    const int64_t* C = col.data_ptr<int64_t>();
    scalar_t* O = out.data_ptr<scalar_t>();
    scalar_t* Cs = c.data_ptr<scalar_t>();
    auto sig = [](scalar_t x) { return scalar_t(1) / (scalar_t(1) + std::exp(-x)); };
    for (int64_t t = 0; t < T; ++t) {
      // h_{t-1}: the previous step's output (h0 at t = 0); the new h goes to out[t]
      const scalar_t* Hp = t == 0 ? h.data_ptr<scalar_t>() : O + (t - 1) * B * H;
      scalar_t* Hn = O + t * B * H;
      at::parallel_for(0, B * H, 64, [&](int64_t b, int64_t e) {
        for (int64_t idx = b; idx < e; ++idx) {
          const int64_t q = idx / H, u = idx % H;
          const scalar_t* hq = Hp + q * H;
          scalar_t a[4];
          for (int g = 0; g < 4; ++g) {
            const int64_t r = g * H + u;
            scalar_t acc = 0;
            for (int64_t p = R[r]; p < R[r + 1]; ++p) acc += V[p] * hq[C[p]];
            a[g] = acc + X[(t * B + q) * 4 * H + g * H + u];
          }
          const scalar_t cn = sig(a[1]) * Cs[idx] + sig(a[0]) * std::tanh(a[2]);
          Cs[idx] = cn;
          Hn[idx] = sig(a[3]) * std::tanh(cn);
        }
      });
    }
  });
  auto hT = T > 0 ? out[T - 1].clone() : h;
  return {out, hT, c};
}

TORCH_LIBRARY_IMPL(lshx, CPU, m) { m.impl("lstm_recurrence", &lstm_recurrence_cpu); }

}  // namespace lshx
