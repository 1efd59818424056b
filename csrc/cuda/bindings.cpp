// ATen bindings of the CUDA kernels (float32 only).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>  // the stream only: no cuBLAS/cuSPARSE headers needed
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
                                c10::cuda::getCurrentCUDAStream()));
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
                                 c10::cuda::getCurrentCUDAStream()));
  return out;
}

static std::tuple<at::Tensor, at::Tensor> lyapunov_step_cuda(const at::Tensor& jb) {
  LSHX_CHECK_F32(jb);
  auto qr = at::linalg_qr(jb, "reduced");
  auto r = std::get<1>(qr).contiguous();
  auto out = at::empty({jb.size(0), jb.size(2)}, jb.options());
  LSHX_CUDA_OK(cuda::log_abs_diag(r.data_ptr<float>(), out.data_ptr<float>(), r.size(0), r.size(2),
                                  c10::cuda::getCurrentCUDAStream()));
  return {std::get<0>(qr).contiguous(), out};
}

// (in x B) batch-last copy of the (B x in) rows of x
static at::Tensor batch_last(const at::Tensor& x, int64_t in) { return x.reshape({-1, in}).t().contiguous(); }

static at::Tensor csr_linear_cuda(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col_,
                                  const at::Tensor& val, const c10::optional<at::Tensor>& bias) {
  LSHX_CHECK_CUDA(x);
  LSHX_CHECK_F32(x);
  const int64_t out = crow.numel() - 1, in = x.size(-1);
  auto xt = batch_last(x, in);
  const int64_t B = xt.size(1);
  auto col = col_.to(at::kLong).contiguous();  // the kernels read int64 indices
  auto yt = at::empty({out, B}, x.options());
  const bool has_bias = bias.has_value() && bias->defined();
  auto b = has_bias ? bias->contiguous() : at::Tensor();
  LSHX_CUDA_OK(cuda::csr_spmm_bt(xt.data_ptr<float>(), crow.contiguous().data_ptr<int64_t>(),
                                 col.data_ptr<int64_t>(), val.contiguous().data_ptr<float>(),
                                 has_bias ? b.data_ptr<float>() : nullptr, yt.data_ptr<float>(), out, B,
                                 c10::cuda::getCurrentCUDAStream()));
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  return yt.t().contiguous().reshape(sizes);
}

static std::tuple<at::Tensor, at::Tensor> csr_linear_backward_cuda(const at::Tensor& grad, const at::Tensor& x,
                                                                   const at::Tensor& crow, const at::Tensor& col_,
                                                                   const at::Tensor& val, const at::Tensor& tcrow,
                                                                   const at::Tensor& tcol_, const at::Tensor& tperm) {
  LSHX_CHECK_CUDA(x);
  LSHX_CHECK_F32(x);
  const int64_t out = crow.numel() - 1, in = x.size(-1);
  TORCH_CHECK(tcrow.numel() == in + 1, "csr_linear_backward: the transposed structure must have ", in, " rows");
  auto xt = batch_last(x, in), gt = batch_last(grad, out);
  const int64_t B = xt.size(1);
  auto col = col_.to(at::kLong).contiguous(), tcol = tcol_.to(at::kLong).contiguous();
  auto tval = val.index_select(0, tperm).contiguous();
  auto gxt = at::empty({in, B}, x.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  LSHX_CUDA_OK(cuda::csr_spmm_bt(gt.data_ptr<float>(), tcrow.contiguous().data_ptr<int64_t>(),
                                 tcol.data_ptr<int64_t>(), tval.data_ptr<float>(), nullptr, gxt.data_ptr<float>(), in,
                                 B, stream));
  auto gw = at::empty({out, in}, x.options());
  LSHX_CUDA_OK(cuda::csr_sddmm_bt(xt.data_ptr<float>(), gt.data_ptr<float>(), crow.contiguous().data_ptr<int64_t>(),
                                  col.data_ptr<int64_t>(), gw.data_ptr<float>(), out, in, B, stream));
  return {gxt.t().contiguous().reshape(x.sizes()), gw};
}

static std::tuple<at::Tensor, at::Tensor> householder_qr_cuda(const at::Tensor& jb) {
  LSHX_CHECK_CUDA(jb);
  LSHX_CHECK_F32(jb);
  TORCH_CHECK(jb.dim() == 3 && jb.size(2) <= jb.size(1), "householder_qr: expected (K, N, k) with k <= N");
  const int64_t K = jb.size(0), N = jb.size(1), k = jb.size(2);
  auto a = jb.contiguous().clone();
  auto tau = at::empty({K, k}, jb.options());
  auto q = at::empty_like(a);
  auto logr = at::empty({K, k}, jb.options());
  LSHX_CUDA_OK(cuda::householder_qr(a.data_ptr<float>(), tau.data_ptr<float>(), q.data_ptr<float>(),
                                    logr.data_ptr<float>(), K, N, k, c10::cuda::getCurrentCUDAStream()));
  return {q, logr};
}

static std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_recurrence_cuda(const at::Tensor& xproj_,
                                                                           const at::Tensor& h0,
                                                                           const at::Tensor& c0,
                                                                           const at::Tensor& crow_,
                                                                           const at::Tensor& col_,
                                                                           const at::Tensor& val_) {
  LSHX_CHECK_CUDA(xproj_);
  LSHX_CHECK_F32(xproj_);
  const int64_t T = xproj_.size(0), B = xproj_.size(1), H = h0.size(-1);
  TORCH_CHECK(xproj_.size(2) == 4 * H && crow_.numel() == 4 * H + 1, "lstm_recurrence: expected 4H gate rows");
  auto xproj = xproj_.contiguous(), crow = crow_.contiguous(), col = col_.to(at::kLong).contiguous();
  auto val = val_.contiguous();
  auto crow_host = crow.cpu();
  auto out = at::empty({T, B, H}, xproj.options());
  auto hbuf = at::empty({2, B, H}, xproj.options());
  auto c = at::empty({B, H}, xproj.options());
  auto h0c = h0.contiguous(), c0c = c0.contiguous();
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
  return {out, T > 0 ? out[T - 1].clone() : h0c.clone(), c};
}

TORCH_LIBRARY_IMPL(lshx, CUDA, m) {
  m.impl("csr_linear", &csr_linear_cuda);
  m.impl("csr_linear_backward", &csr_linear_backward_cuda);
  m.impl("householder_qr", &householder_qr_cuda);
  m.impl("lstm_recurrence", &lstm_recurrence_cuda);
  m.impl("masked_linear", &masked_linear_cuda);
  m.impl("masked_linear_backward", &masked_linear_backward_cuda);
  m.impl("row_combine", &row_combine_cuda);
  m.impl("lyapunov_step", &lyapunov_step_cuda);
}

}  // namespace lshx
