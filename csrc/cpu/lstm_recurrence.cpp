// The recurrence of one sparse LSTM layer with W_hh in CSR form, all T steps in one call
// (the op of the persistent CUDA kernel, csrc/cuda/lstm_persistent.cu): per step one CSR
// SpMM of W_hh with h_{t-1} kept batch-last, then the gates, parallel over hidden units.
// Inference only (no autograd).
//
// xproj (T, B, 4H) = x_t @ W_ih^T + b_ih + b_hh (gate order i, f, g, o); W_hh (4H x H) in
// CSR (crow, col, val); h0, c0 (B, H). Returns out (T, B, H), h_T, c_T.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "../recurrence_shared.h"
#include "../utils.h"
#include "csr_kernels.h"

namespace lshx {

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_recurrence_cpu(const at::Tensor& xproj_, const at::Tensor& h0_,
                                                                   const at::Tensor& c0_, const at::Tensor& crow_,
                                                                   const at::Tensor& col_, const at::Tensor& val_) {
  LSHX_CHECK_CPU(xproj_);
  LSHX_CHECK_FLOAT(xproj_);
  check_lstm_recurrence(xproj_, h0_, c0_, crow_, col_);
  const int64_t T = xproj_.size(0), B = xproj_.size(1), H = h0_.size(-1);
  TORCH_CHECK(val_.scalar_type() == xproj_.scalar_type(), "lstm_recurrence: values and xproj dtypes differ");
  auto xproj = xproj_.contiguous(), crow = crow_.contiguous(), col = col_.contiguous(), val = val_.contiguous();
  // h_{t-1} batch-last (H x Bp, padding lanes zero) for the SpMM; c in (B, H) order
  auto ht = batch_last(h0_.to(xproj.scalar_type()));
  const int64_t Bp = ht.size(1);
  auto c = c0_.contiguous().clone();
  auto out = at::empty({T, B, H}, xproj.options());
  for (int64_t t = 0; t < T; ++t) {
    auto rec = spmm_batch_last(ht, crow, col, val);  // (4H x Bp): W_hh h_{t-1}, gate rows i, f, g, o
    AT_DISPATCH_FLOATING_TYPES(xproj.scalar_type(), "lstm_recurrence_cpu", [&] {
      const scalar_t* X = xproj.data_ptr<scalar_t>() + t * B * 4 * H;
      const scalar_t* G = rec.data_ptr<scalar_t>();
      scalar_t* Cs = c.data_ptr<scalar_t>();
      scalar_t* Ht = ht.data_ptr<scalar_t>();
      scalar_t* O = out.data_ptr<scalar_t>() + t * B * H;
      auto sig = [](scalar_t x) { return scalar_t(1) / (scalar_t(1) + std::exp(-x)); };
      at::parallel_for(0, H, 32, [&](int64_t b, int64_t e) {
        for (int64_t u = b; u < e; ++u)
          for (int64_t q = 0; q < B; ++q) {
            scalar_t a[4];
            for (int g = 0; g < 4; ++g) a[g] = G[(g * H + u) * Bp + q] + X[q * 4 * H + g * H + u];
            const scalar_t cn = sig(a[1]) * Cs[q * H + u] + sig(a[0]) * std::tanh(a[2]);
            const scalar_t hn = sig(a[3]) * std::tanh(cn);
            Cs[q * H + u] = cn;
            Ht[u * Bp + q] = hn;
            O[q * H + u] = hn;
          }
      });
    });
  }
  auto hT = T > 0 ? out[T - 1].clone() : h0_.contiguous().clone();
  return {out, hT, c};
}

TORCH_LIBRARY_IMPL(lshx, CPU, m) { m.impl("lstm_recurrence", &lstm_recurrence_cpu); }

}  // namespace lshx
