// Op schemas of the lshx extension. Kernels live in csrc/cpu and csrc/cuda.
#include <Python.h>
#include <torch/library.h>

#ifdef WITH_CUDA
#include <cuda_runtime.h>
#endif

// An empty Python module so that `import lshx._C` loads the shared library and
// runs the TORCH_LIBRARY registrations below. The ops are reached through torch.ops.lshx.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace lshx {

int64_t cuda_version() {
#ifdef WITH_CUDA
  return CUDART_VERSION;
#else
  return -1;
#endif
}

TORCH_LIBRARY(lshx, m) {
  // y = x @ (weight * mask)^T + bias. The weight gradient is the dense one (not masked)
  // so that gradient-based growth can read it; the DST engine masks it before the step.
  m.def("masked_linear(Tensor x, Tensor weight, Tensor mask, Tensor? bias) -> Tensor");
  m.def("masked_linear_backward(Tensor grad, Tensor x, Tensor weight, Tensor mask, bool has_bias)"
        " -> (Tensor, Tensor, Tensor)");
  // Jacobian block from gate-scaled weight rows, without autograd or diag_embed:
  //   out[s, j, :] = sum_g coef[s, g, j] * w[g*H + j, :]  (+ diag[s, j] at column j when given).
  // w: (G*H, M), coef: (K, G, H), diag: (K, H) or empty. LSTM: G = 4 gates; RHN: G = 2, diag = 1 - t.
  m.def("row_combine(Tensor w, Tensor coef, Tensor diag) -> Tensor");
  // One Lyapunov re-orthonormalization: Q, R = qr(jb); returns Q and log|diag R| (per sample).
  m.def("lyapunov_step(Tensor jb) -> (Tensor, Tensor)");
  // y = x @ W^T + bias with W (out x in) given in CSR form: low-density inference path.
  m.def("csr_linear(Tensor x, Tensor crow, Tensor col, Tensor val, Tensor? bias) -> Tensor");
  // Its backward: grad_x through W^T in CSR form (tcrow, tcol; values val[tperm]) and the
  // dense (out x in) weight gradient computed at the nonzeros only, zero elsewhere (no GEMM).
  m.def("csr_linear_backward(Tensor grad, Tensor x, Tensor crow, Tensor col, Tensor val, Tensor tcrow,"
        " Tensor tcol, Tensor tperm) -> (Tensor, Tensor)");
  // Q and log|diag R| by CholeskyQR2 (two Cholesky passes on the Gram matrix): for tall
  // skinny blocks (k << N) it is GEMM-bound. Falls back to Householder when the Gram
  // matrix is not numerically positive definite.
  m.def("cholqr2(Tensor a) -> (Tensor, Tensor)");
  // Unblocked batched Householder QR of a (K, N, k) batch: Q and log|diag R| (one CUDA block
  // per sample there; the CPU version is the same algorithm, for the tests).
  m.def("householder_qr(Tensor a) -> (Tensor, Tensor)");
  // T steps of one sparse LSTM layer, W_hh (4H x H) in CSR, inference only: the persistent
  // kernel on CUDA (weights in shared memory across steps), a per-step loop on the CPU.
  // xproj (T, B, 4H) holds x_t @ W_ih^T + both biases. Returns (out (T, B, H), h_T, c_T).
  m.def("lstm_recurrence(Tensor xproj, Tensor h0, Tensor c0, Tensor crow, Tensor col, Tensor val)"
        " -> (Tensor, Tensor, Tensor)");
  // The RHN's highway recurrence (coupled gates, carry 1 - t), all T steps x D micro-steps, for
  // training: xp (T, B, 2H) = x @ W_ih^T + b_ih enters the first micro-step; weights[d] (2H, H)
  // (already masked, or exactly zero off their masks) and biases[d] (2H); s0 (B, H); drop (B, H)
  // the hidden-dropout mask shared by every micro-step, applied to the state entering each GEMM.
  // Returns (out (T, B, H), s_T, states (D, T, B, H): the state entering every micro-step,
  // gates (D, T, B, 2H): tanh and sigmoid of every micro-step), the last two for the backward.
  m.def("rhn_recurrence(Tensor xp, Tensor s0, Tensor[] weights, Tensor[] biases, Tensor? drop)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  // Its backward: (grad_xp, grad_s0, dense grad of each weight, grad of each bias).
  m.def("rhn_recurrence_backward(Tensor grad_out, Tensor grad_s, Tensor[] weights, Tensor? drop, Tensor states,"
        " Tensor gates) -> (Tensor, Tensor, Tensor[], Tensor[])");
  m.def("cuda_version() -> int", &cuda_version);
}

}  // namespace lshx
