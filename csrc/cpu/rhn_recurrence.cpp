// The RHN's highway recurrence, all T steps x D micro-steps in one call, forward and backward
// (lshx/models/rhn.py; the op the fused training path calls instead of the per-step loop).
//
// Micro-step d at step t, state s (B, H) entering it, shared hidden-dropout mask m (or none):
//   pre = (s * m) @ W_d^T + b_d (+ xp_t when d = 0)      W_d (2H, H), b_d (2H), xp (T, B, 2H)
//   h = tanh(pre[:, :H]), g = sigmoid(pre[:, H:]),   s' = h * g + s * (1 - g)   (carry 1 - g)
// The forward saves the state entering every micro-step, states (D, T, B, H), and the activated
// gates [h, g], gates (D, T, B, 2H); out (T, B, H) is the state after the last micro-step of
// each step. The backward walks the micro-steps in reverse with one GEMM each (the state
// gradient through W_d), keeping every pre-activation gradient, then gets each weight
// gradient from one (2H x T*B) @ (T*B x H) GEMM per depth and the bias gradient by a sum.
//
// The weight gradients are the dense ones (masked_weight's straight-through gradient): the
// caller passes W * M (or a W known to be zero off M) and gets d/d(W * M).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../recurrence_shared.h"
#include "../rhn_checks.h"
#include "../utils.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lshx {

namespace {

// Elementwise work of one micro-step is B*H entries: split across threads only above ATen's
// own grain size (below it the thread hand-off costs more than the loop).
constexpr int64_t kGrain = 32768;

// The micro-steps' GEMMs are sequential and, at the small preset, tiny (B = 10, H = 200:
// 1.6 MFLOP, ~60 us on one core here). MKL splits even these across threads: with 2 threads on
// this shared machine each took ~6x longer in wall time (725 us against 125 us, measured
// 2026-11-28), the threads spinning at each GEMM's barrier. Below kSerialGemmFlops per GEMM the
// whole op runs on the calling thread (any parallel region in it, even the weight-gradient
// GEMMs after the loop, left a worker spinning against it: the backward took 256 ms instead
// of 31 ms with 2 threads); the paper's (B = 20, H = 830: 55 MFLOP) keep the intra-op threads.
constexpr double kSerialGemmFlops = 8e6;

}  // namespace
}  // namespace lshx

// MKL's per-thread thread count (torch sets it in at::set_num_threads, and MKL then ignores
// OpenMP's): weak, so a torch built without MKL still loads the extension (null there).
extern "C" int MKL_Set_Num_Threads_Local(int nthreads) __attribute__((weak));

namespace lshx {
namespace {

class SerialGemms {
 public:
  explicit SerialGemms(double flops) {
#ifdef _OPENMP
    if (flops < kSerialGemmFlops && !omp_in_parallel() && omp_get_max_threads() > 1) {
      omp_saved_ = omp_get_max_threads();
      omp_set_num_threads(1);  // at::parallel_for and OpenMP-threaded BLAS
      if (MKL_Set_Num_Threads_Local) {
        mkl_saved_ = MKL_Set_Num_Threads_Local(1);  // the previous local count, 0 = MKL's global one
        mkl_set_ = true;
      }
    }
#endif
  }
  ~SerialGemms() {
#ifdef _OPENMP
    if (mkl_set_) MKL_Set_Num_Threads_Local(mkl_saved_);
    if (omp_saved_ > 1) omp_set_num_threads(omp_saved_);
#endif
  }
  SerialGemms(const SerialGemms&) = delete;
  SerialGemms& operator=(const SerialGemms&) = delete;

 private:
  int omp_saved_ = 0;
  int mkl_saved_ = 0;
  bool mkl_set_ = false;
};

// One forward micro-step's state update from its activated gates [h, g] (B, 2H): writes the
// new state to s_next (and s_out), and s_next * drop to sin_next (the next GEMM's input) when
// there is a dropout mask. (tanh and sigmoid run before it as ATen's kernels, MKL's vector
// tanh and Sleef's exp: libm's scalar tanhf in this loop took ~30% of the forward, by perf.)
template <typename scalar_t>
void forward_state(const scalar_t* gates, const scalar_t* sprev, const scalar_t* drop, scalar_t* s_next,
                   scalar_t* s_out, scalar_t* sin_next, int64_t B, int64_t H) {
  at::parallel_for(0, B * H, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / H, j = i - b * H, r = b * 2 * H;
      const scalar_t h = gates[r + j], g = gates[r + H + j];
      const scalar_t sn = h * g + sprev[i] * (scalar_t(1) - g);
      s_next[i] = sn;
      if (s_out) s_out[i] = sn;
      if (sin_next) sin_next[i] = sn * drop[i];
    }
  });
}

// One backward micro-step: the gradient G of its output state is carry (+ drop * tmp, the
// gradient through the next micro-step's W, when tmp is given) (+ gadd, the gradient of a
// model output at this state); writes the pre-activation gradient gpre (B, 2H) and
// carry = G * (1 - g), the part of the input state's gradient that skips W_d.
template <typename scalar_t>
void backward_gates(scalar_t* carry, const scalar_t* tmp, const scalar_t* drop, const scalar_t* gadd,
                    const scalar_t* gates, const scalar_t* sprev, scalar_t* gpre, int64_t B, int64_t H) {
  at::parallel_for(0, B * H, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / H, j = i - b * H, r = b * 2 * H;
      scalar_t G = carry[i];
      if (tmp) G += drop ? drop[i] * tmp[i] : tmp[i];
      if (gadd) G += gadd[i];
      const scalar_t h = gates[r + j], g = gates[r + H + j];
      gpre[r + j] = G * g * (scalar_t(1) - h * h);
      gpre[r + H + j] = G * (h - sprev[i]) * g * (scalar_t(1) - g);
      carry[i] = G * (scalar_t(1) - g);
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rhn_recurrence_cpu(
    const at::Tensor& xp_, const at::Tensor& s0_, at::TensorList weights, at::TensorList biases,
    const c10::optional<at::Tensor>& drop_) {
  LSHX_CHECK_CPU(xp_);
  check_rhn_inputs(xp_, s0_, weights, biases, drop_, "rhn_recurrence");
  const int64_t T = xp_.size(0), B = xp_.size(1), H = s0_.size(1), D = static_cast<int64_t>(weights.size());
  const bool has_drop = drop_.has_value() && drop_->defined();
  SerialGemms serial(2.0 * B * H * 2 * H);  // the whole op: a parallel region before the loop costs too
  auto xp = xp_.contiguous(), s0 = s0_.contiguous();
  auto drop = has_drop ? drop_->contiguous() : at::Tensor();
  auto opts = xp.options();
  std::vector<at::Tensor> wt(D), bias(D);
  for (int64_t d = 0; d < D; ++d) {
    wt[d] = weights[d].t().contiguous();  // (H, 2H): s_in @ wt is a plain row-major GEMM
    bias[d] = biases[d].contiguous();
  }
  auto states = at::empty({D, T, B, H}, opts), gates = at::empty({D, T, B, 2 * H}, opts);
  auto out = at::empty({T, B, H}, opts);
  if (T == 0) return {out, s0.clone(), states, gates};
  auto pre = at::empty({B, 2 * H}, opts);
  auto xpb = xp + bias[0];  // the first micro-step adds both biases
  auto sin = has_drop ? s0 * drop : at::Tensor();  // the GEMM input s * drop
  states[0][0].copy_(s0);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "rhn_recurrence_cpu", [&] {
    scalar_t* S = states.data_ptr<scalar_t>();
    scalar_t* G = gates.data_ptr<scalar_t>();
    scalar_t* O = out.data_ptr<scalar_t>();
    const scalar_t* M = has_drop ? drop.data_ptr<scalar_t>() : nullptr;
    const int64_t n = B * H;
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t d = 0; d < D; ++d) {
        const int64_t k = d * T + t;  // (d, t) slot of states / gates
        auto sp = states[d][t];
        at::addmm_out(pre, d == 0 ? xpb[t] : bias[d], has_drop ? sin : sp, wt[d]);
        auto gk = gates[d][t];
        auto gh = gk.narrow(1, 0, H), gg = gk.narrow(1, H, H);
        at::tanh_out(gh, pre.narrow(1, 0, H));
        at::sigmoid_out(gg, pre.narrow(1, H, H));
        // the new state goes to the slot of the next micro-step and, after the last, to out[t]
        scalar_t* next = nullptr;
        scalar_t* s_out = nullptr;
        if (d + 1 < D) {
          next = S + ((d + 1) * T + t) * n;
        } else {
          s_out = O + t * n;
          next = t + 1 < T ? S + (t + 1) * n : s_out;  // states[0][t + 1]
          if (next == s_out) s_out = nullptr;
        }
        const bool last = d + 1 == D && t + 1 == T;
        forward_state<scalar_t>(G + k * 2 * n, S + k * n, M, next, s_out,
                                has_drop && !last ? sin.data_ptr<scalar_t>() : nullptr, B, H);
      }
    }
  });
  return {out, out[T - 1].clone(), states, gates};
}

std::tuple<at::Tensor, at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> rhn_recurrence_backward_cpu(
    const at::Tensor& grad_out_, const at::Tensor& grad_s_, at::TensorList weights,
    const c10::optional<at::Tensor>& drop_, const at::Tensor& states_, const at::Tensor& gates_) {
  LSHX_CHECK_CPU(states_);
  check_rhn_backward_inputs(grad_out_, grad_s_, weights, drop_, states_, gates_);
  const int64_t D = states_.size(0), T = states_.size(1), B = states_.size(2), H = states_.size(3);
  const bool has_drop = drop_.has_value() && drop_->defined();
  SerialGemms serial(2.0 * B * H * 2 * H);
  auto states = states_.contiguous(), gates = gates_.contiguous();
  auto grad_out = grad_out_.contiguous();
  auto drop = has_drop ? drop_->contiguous() : at::Tensor();
  RhnBackward bw(grad_out, grad_s_, weights, states);
  if (T > 0) {
    AT_DISPATCH_FLOATING_TYPES(states.scalar_type(), "rhn_recurrence_backward_cpu", [&] {
      const scalar_t* S = states.data_ptr<scalar_t>();
      const scalar_t* Gt = gates.data_ptr<scalar_t>();
      const scalar_t* GO = grad_out.data_ptr<scalar_t>();
      const scalar_t* M = has_drop ? drop.data_ptr<scalar_t>() : nullptr;
      scalar_t* C = bw.carry.data_ptr<scalar_t>();
      const int64_t n = B * H;
      bw.walk(T, [&](int64_t t, int64_t d, bool first) {
        const int64_t k = d * T + t;
        const scalar_t* gadd = (d == D - 1 && t < T - 1) ? GO + t * n : nullptr;
        backward_gates<scalar_t>(C, first ? nullptr : bw.tmp.data_ptr<scalar_t>(), M, gadd, Gt + k * 2 * n,
                                 S + k * n, bw.gpre[d].data_ptr<scalar_t>() + t * 2 * n, B, H);
      });
    });
    // the gradient of s0: what skips W_0 plus what goes through it
    bw.carry = has_drop ? bw.carry.add_(bw.tmp * drop) : bw.carry.add_(bw.tmp);
  }
  rhn_weight_grads(bw.gpre, states, drop, bw.gw, bw.gb);
  return {bw.gpre[0], bw.carry, bw.gw, bw.gb};
}

TORCH_LIBRARY_IMPL(lshx, CPU, m) {
  m.impl("rhn_recurrence", &rhn_recurrence_cpu);
  m.impl("rhn_recurrence_backward", &rhn_recurrence_backward_cpu);
}

}  // namespace lshx
