// ATen binding of the persistent sparse LSTM kernel (csrc/cuda/lstm_persistent.cu), float32.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../recurrence_shared.h"
#include "cuda_checks.h"

namespace lshx {

static std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_recurrence_cuda(const at::Tensor& xproj_,
                                                                           const at::Tensor& h0,
                                                                           const at::Tensor& c0,
                                                                           const at::Tensor& crow_,
                                                                           const at::Tensor& col_,
                                                                           const at::Tensor& val_) {
  LSHX_CHECK_CUDA(xproj_);
  LSHX_CHECK_F32(xproj_);
  LSHX_CHECK_SAME_DEVICE(h0, xproj_);
  LSHX_CHECK_SAME_DEVICE(c0, xproj_);
  LSHX_CHECK_SAME_DEVICE(crow_, xproj_);
  LSHX_CHECK_SAME_DEVICE(col_, xproj_);
  LSHX_CHECK_SAME_DEVICE(val_, xproj_);
  check_lstm_recurrence(xproj_, h0, c0, crow_, col_);
  const int64_t T = xproj_.size(0), B = xproj_.size(1), H = h0.size(-1);
  TORCH_CHECK(h0.scalar_type() == at::kFloat && c0.scalar_type() == at::kFloat && val_.scalar_type() == at::kFloat,
              "lstm_recurrence: h0, c0 and the values must be float32 on CUDA");
  TORCH_CHECK(col_.numel() == val_.numel(), "lstm_recurrence: col and val lengths differ");
  LSHX_DEVICE_GUARD(xproj_);
  auto xproj = xproj_.contiguous(), crow = crow_.contiguous(), col = col_.to(at::kLong).contiguous();
  auto val = val_.contiguous();
  auto crow_host = crow.cpu();
  auto out = at::empty({T, B, H}, xproj.options());
  auto hbuf = at::empty({2, B, H}, xproj.options());
  auto c = at::empty({B, H}, xproj.options());
  auto h0c = h0.contiguous(), c0c = c0.contiguous();
  if (T == 0) return {out, h0c.clone(), c0c.clone()};  // no step: the state is the initial one
  int used_smem = 0;
  cudaError_t err = cuda::lstm_persistent(xproj.data_ptr<float>(), crow_host.data_ptr<int64_t>(),
                                          crow.data_ptr<int64_t>(), col.data_ptr<int64_t>(), val.data_ptr<float>(),
                                          h0c.data_ptr<float>(), c0c.data_ptr<float>(), hbuf.data_ptr<float>(),
                                          c.data_ptr<float>(), out.data_ptr<float>(), T, B, H, &used_smem,
                                          c10::cuda::getCurrentCUDAStream());
  if (err == cudaErrorCooperativeLaunchTooLarge || err == cudaErrorNotSupported) {
    (void)cudaGetLastError();  // clear it: one launch per step instead (same arithmetic)
    auto w = at::sparse_csr_tensor(crow, col, val, {4 * H, H}, val.options()).to_dense();
    auto h = h0c, cc = c0c;
    for (int64_t t = 0; t < T; ++t) {
      auto gates = at::addmm(xproj[t], h, w.t()).chunk(4, 1);
      cc = at::sigmoid(gates[1]) * cc + at::sigmoid(gates[0]) * at::tanh(gates[2]);
      h = at::sigmoid(gates[3]) * at::tanh(cc);
      out[t].copy_(h);
    }
    return {out, h.clone(), cc};
  }
  LSHX_CUDA_OK(err);
  return {out, out[T - 1].clone(), c};
}

TORCH_LIBRARY_IMPL(lshx, CUDA, m) {
  m.impl("lstm_recurrence", &lstm_recurrence_cuda);
}

}  // namespace lshx
