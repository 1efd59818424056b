// ATen bindings of the CUDA kernels (float32 only).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>   // the device guard: ops run on their inputs' device, not device 0
#include <c10/cuda/CUDAStream.h>  // the stream only: no cuBLAS/cuSPARSE headers needed
#include <torch/library.h>

#include "../rhn_checks.h"
#include "../utils.h"
#include "kernels.h"

namespace lshx {

#define LSHX_CUDA_OK(expr)                                                     \
  do {                                                                         \
    cudaError_t err_ = (expr);                                                 \
    TORCH_CHECK(err_ == cudaSuccess, "lshx CUDA error: ", cudaGetErrorString(err_)); \
  } while (0)
#define LSHX_CHECK_F32(x) TORCH_CHECK((x).scalar_type() == at::kFloat, #x " must be float32 on CUDA")
// Every tensor a kernel reads must live on the data's GPU: a CPU mask or a tensor on another
// GPU would hand a kernel a pointer it cannot dereference.
#define LSHX_CHECK_SAME_DEVICE(x, ref) \
  TORCH_CHECK((x).device() == (ref).device(), #x " is on ", (x).device(), " but the data is on ", (ref).device())
// Custom ops get no automatic device guard: switch to the inputs' device for the launch and the
// current-stream lookup (a model on cuda:1 would otherwise launch on device 0's stream).
#define LSHX_DEVICE_GUARD(x) const c10::cuda::OptionalCUDAGuard device_guard_(device_of(x))

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

static at::Tensor row_combine_cuda(const at::Tensor& w_, const at::Tensor& coef_, const at::Tensor& diag_) {
  LSHX_CHECK_CUDA(w_);
  LSHX_CHECK_F32(w_);
  LSHX_CHECK_DIM(w_, 2);
  LSHX_CHECK_DIM(coef_, 3);
  LSHX_CHECK_SAME_DEVICE(coef_, w_);
  TORCH_CHECK(coef_.scalar_type() == w_.scalar_type(), "row_combine: coef and w dtypes differ");
  const int64_t K = coef_.size(0), G = coef_.size(1), H = coef_.size(2), M = w_.size(1);
  TORCH_CHECK(w_.size(0) == G * H, "row_combine: w has ", w_.size(0), " rows, expected G*H = ", G * H);
  const bool has_diag = diag_.defined() && diag_.numel() > 0;
  if (has_diag) {
    LSHX_CHECK_SAME_DEVICE(diag_, w_);
    TORCH_CHECK(diag_.scalar_type() == w_.scalar_type(), "row_combine: diag and w dtypes differ");
    TORCH_CHECK(M == H && diag_.dim() == 2 && diag_.size(0) == K && diag_.size(1) == H,
                "row_combine: diag needs a square block and shape (K, H)");
  }
  LSHX_DEVICE_GUARD(w_);
  auto w = w_.contiguous(), coef = coef_.contiguous();
  auto diag = has_diag ? diag_.contiguous() : diag_;
  auto out = at::empty({K, H, M}, w.options());
  LSHX_CUDA_OK(cuda::row_combine(w.data_ptr<float>(), coef.data_ptr<float>(),
                                 has_diag ? diag.data_ptr<float>() : nullptr, out.data_ptr<float>(), K, G, H, M,
                                 c10::cuda::getCurrentCUDAStream()));
  return out;
}

static std::tuple<at::Tensor, at::Tensor> lyapunov_step_cuda(const at::Tensor& jb) {
  LSHX_CHECK_CUDA(jb);
  LSHX_CHECK_F32(jb);
  LSHX_CHECK_DIM(jb, 3);
  TORCH_CHECK(jb.size(2) <= jb.size(1), "lyapunov_step: k must not exceed N");
  LSHX_DEVICE_GUARD(jb);
  auto qr = at::linalg_qr(jb, "reduced");
  auto r = std::get<1>(qr).contiguous();
  auto out = at::empty({jb.size(0), jb.size(2)}, jb.options());
  LSHX_CUDA_OK(cuda::log_abs_diag(r.data_ptr<float>(), out.data_ptr<float>(), r.size(0), r.size(2),
                                  c10::cuda::getCurrentCUDAStream()));
  return {std::get<0>(qr).contiguous(), out};
}

// The checks the CPU CSR op makes, plus: every structure tensor on the data's GPU.
static void check_csr(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val) {
  LSHX_CHECK_SAME_DEVICE(crow, x);
  LSHX_CHECK_SAME_DEVICE(col, x);
  LSHX_CHECK_SAME_DEVICE(val, x);
  TORCH_CHECK(crow.scalar_type() == at::kLong, "csr_linear: crow must be int64");
  TORCH_CHECK(col.scalar_type() == at::kLong || col.scalar_type() == at::kInt, "csr_linear: col must be int32/64");
  TORCH_CHECK(val.scalar_type() == x.scalar_type(), "csr_linear: values and x dtypes differ");
  TORCH_CHECK(col.numel() == val.numel(), "csr_linear: col and val lengths differ");
  TORCH_CHECK(crow.dim() == 1 && crow.numel() >= 1, "csr_linear: crow must be a non-empty vector");
}

// (in x B) batch-last copy of the (B x in) rows of x
static at::Tensor batch_last(const at::Tensor& x, int64_t in) { return x.reshape({-1, in}).t().contiguous(); }

static at::Tensor csr_linear_cuda(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col_,
                                  const at::Tensor& val, const c10::optional<at::Tensor>& bias) {
  LSHX_CHECK_CUDA(x);
  LSHX_CHECK_F32(x);
  check_csr(x, crow, col_, val);
  const int64_t out = crow.numel() - 1, in = x.size(-1);
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) {
    LSHX_CHECK_SAME_DEVICE(*bias, x);
    TORCH_CHECK(bias->numel() == out, "csr_linear: bias has ", bias->numel(), " entries, expected ", out);
  }
  LSHX_DEVICE_GUARD(x);
  auto xt = batch_last(x, in);
  const int64_t B = xt.size(1);
  auto col = col_.to(at::kLong).contiguous();  // the kernels read int64 indices
  auto yt = at::empty({out, B}, x.options());
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
  check_csr(x, crow, col_, val);
  LSHX_CHECK_SAME_DEVICE(grad, x);
  LSHX_CHECK_SAME_DEVICE(tcrow, x);
  LSHX_CHECK_SAME_DEVICE(tcol_, x);
  LSHX_CHECK_SAME_DEVICE(tperm, x);
  const int64_t out = crow.numel() - 1, in = x.size(-1);
  TORCH_CHECK(grad.size(-1) == out, "csr_linear_backward: grad has ", grad.size(-1), " features, expected ", out);
  TORCH_CHECK(tcrow.numel() == in + 1, "csr_linear_backward: the transposed structure must have ", in, " rows");
  TORCH_CHECK(tcol_.numel() == col_.numel() && tperm.numel() == col_.numel(),
              "csr_linear_backward: the transposed structure has another nonzero count");
  LSHX_DEVICE_GUARD(x);
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
  LSHX_DEVICE_GUARD(jb);
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
  LSHX_CHECK_DIM(xproj_, 3);
  LSHX_CHECK_SAME_DEVICE(h0, xproj_);
  LSHX_CHECK_SAME_DEVICE(c0, xproj_);
  LSHX_CHECK_SAME_DEVICE(crow_, xproj_);
  LSHX_CHECK_SAME_DEVICE(col_, xproj_);
  LSHX_CHECK_SAME_DEVICE(val_, xproj_);
  const int64_t T = xproj_.size(0), B = xproj_.size(1), H = h0.size(-1);
  TORCH_CHECK(xproj_.size(2) == 4 * H, "lstm_recurrence: xproj has ", xproj_.size(2), " features, expected 4H = ",
              4 * H);
  TORCH_CHECK(h0.dim() == 2 && h0.sizes() == c0.sizes() && h0.size(0) == B,
              "lstm_recurrence: h0 and c0 must be (B, H) with B = ", B);
  TORCH_CHECK(h0.scalar_type() == at::kFloat && c0.scalar_type() == at::kFloat && val_.scalar_type() == at::kFloat,
              "lstm_recurrence: h0, c0 and the values must be float32 on CUDA");
  TORCH_CHECK(crow_.numel() == 4 * H + 1, "lstm_recurrence: W_hh must have 4H rows");
  TORCH_CHECK(crow_.scalar_type() == at::kLong, "lstm_recurrence: crow must be int64");
  TORCH_CHECK(col_.scalar_type() == at::kLong || col_.scalar_type() == at::kInt,
              "lstm_recurrence: col must be int32/64");
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
  auto opts = states.options();
  std::vector<at::Tensor> w(D), gpre(D), gw(D), gb(D);
  for (int64_t d = 0; d < D; ++d) {
    w[d] = weights[d].contiguous();
    gpre[d] = at::empty({T, B, 2 * H}, opts);
  }
  auto carry = (grad_s_ + (T > 0 ? grad_out[T - 1] : at::zeros_like(grad_s_))).contiguous();
  auto tmp = at::empty({B, H}, opts);
  if (T > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    const float* S = states.data_ptr<float>();
    const float* Gt = gates.data_ptr<float>();
    const float* GO = grad_out.data_ptr<float>();
    const float* M = has_drop ? drop.data_ptr<float>() : nullptr;
    const int64_t n = B * H;
    bool first = true;
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t d = D - 1; d >= 0; --d) {
        const int64_t k = d * T + t;
        const float* gadd = (d == D - 1 && t < T - 1) ? GO + t * n : nullptr;
        LSHX_CUDA_OK(cuda::rhn_backward_step(carry.data_ptr<float>(), first ? nullptr : tmp.data_ptr<float>(), M,
                                             gadd, Gt + k * 2 * n, S + k * n,
                                             gpre[d].data_ptr<float>() + t * 2 * n, B, H, stream));
        first = false;
        at::mm_out(tmp, gpre[d][t], w[d]);
      }
    }
    carry = has_drop ? carry.add_(tmp * drop) : carry.add_(tmp);
  }
  for (int64_t d = 0; d < D; ++d) {
    auto g2 = gpre[d].view({T * B, 2 * H});
    auto sd = has_drop ? states[d] * drop : states[d];
    gw[d] = at::mm(g2.t(), sd.reshape({T * B, H}));
    gb[d] = g2.sum(0);
  }
  return {gpre[0], carry, gw, gb};
}

TORCH_LIBRARY_IMPL(lshx, CUDA, m) {
  m.impl("csr_linear", &csr_linear_cuda);
  m.impl("csr_linear_backward", &csr_linear_backward_cuda);
  m.impl("householder_qr", &householder_qr_cuda);
  m.impl("lstm_recurrence", &lstm_recurrence_cuda);
  m.impl("masked_linear", &masked_linear_cuda);
  m.impl("masked_linear_backward", &masked_linear_backward_cuda);
  m.impl("row_combine", &row_combine_cuda);
  m.impl("rhn_recurrence", &rhn_recurrence_cuda);
  m.impl("rhn_recurrence_backward", &rhn_recurrence_backward_cuda);
  m.impl("lyapunov_step", &lyapunov_step_cuda);
}

}  // namespace lshx
