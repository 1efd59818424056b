// Launchers of the lshx CUDA kernels. Raw pointers and a stream only, so nvcc can
// compile the .cu files without the torch headers.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

namespace lshx {
namespace cuda {

// out[i] = w[i] * mask[i] (as the CPU op: NaN * 0 stays NaN)
cudaError_t apply_mask(const float* w, const bool* mask, float* out, int64_t n, cudaStream_t stream);

// out[s, j, m] = sum_g coef[s, g, j] * w[g*H + j, m] (+ diag[s, j] when m == j; diag may be null).
cudaError_t row_combine(const float* w, const float* coef, const float* diag, float* out, int64_t K, int64_t G,
                        int64_t H, int64_t M, cudaStream_t stream);

// out[s, j] = log|r[s, j, j]| for a batch of K upper-triangular k x k blocks, row-major.
cudaError_t log_abs_diag(const float* r, float* out, int64_t K, int64_t k, cudaStream_t stream);

// Batch-last CSR SpMM: yt (rows x B) = W (rows x cols, CSR) @ xt (cols x B) (+ bias per row);
// int32 or int64 column indices.
cudaError_t csr_spmm_bt(const float* xt, const int64_t* crow, const int32_t* col, const float* val,
                        const float* bias, float* yt, int64_t rows, int64_t B, cudaStream_t stream);
cudaError_t csr_spmm_bt(const float* xt, const int64_t* crow, const int64_t* col, const float* val,
                        const float* bias, float* yt, int64_t rows, int64_t B, cudaStream_t stream);

// Dense gw (rows x cols) = (gt @ xt^T) at the nonzeros of the CSR structure, zero elsewhere;
// gt (rows x B), xt (cols x B).
cudaError_t csr_sddmm_bt(const float* xt, const float* gt, const int64_t* crow, const int32_t* col, float* gw,
                         int64_t rows, int64_t cols, int64_t B, cudaStream_t stream);
cudaError_t csr_sddmm_bt(const float* xt, const float* gt, const int64_t* crow, const int64_t* col, float* gw,
                         int64_t rows, int64_t cols, int64_t B, cudaStream_t stream);

// T steps of a sparse LSTM layer in one cooperative launch (see lstm_persistent.cu).
// crow_host: the row pointers on the host (to size the shared-memory slices); hbuf: 2*B*H
// scratch, h_T ends in its (T % 2) half; c: B*H, c_T on return; out: T*B*H.
// *used_smem says whether the weights fit in shared memory. cudaErrorCooperativeLaunchTooLarge
// or cudaErrorNotSupported: the caller falls back to one launch per step.
cudaError_t lstm_persistent(const float* xproj, const int64_t* crow_host, const int64_t* crow, const int64_t* col,
                            const float* val, const float* h0, const float* c0, float* hbuf, float* c, float* out,
                            int64_t T, int64_t B, int64_t H, int* used_smem, cudaStream_t stream);

// Batched Householder QR of K row-major (N x k) blocks, one block per sample: a is factored
// in place, tau (K x k) is scratch, q (K x N x k) gets the reduced Q, logr (K x k) log|R_jj|.
cudaError_t householder_qr(float* a, float* tau, float* q, float* logr, int64_t K, int64_t N, int64_t k,
                           cudaStream_t stream);

// One forward micro-step of the RHN recurrence after its GEMM pre = s_in @ W_d^T (B x 2H):
// adds bias (2H) and xp_t (B x 2H, null after the first micro-step), writes the activated
// gates [tanh, sigmoid] (B x 2H), the new state h*g + sprev*(1-g) to s_next (and s_out unless
// null), and s_next * drop to sin_next unless null (the next GEMM's input).
cudaError_t rhn_forward_step(const float* pre, const float* xp_t, const float* bias, const float* sprev,
                             const float* drop, float* gates, float* s_next, float* s_out, float* sin_next,
                             int64_t B, int64_t H, cudaStream_t stream);

// One backward micro-step: G = carry + drop*tmp (tmp: the state gradient through the next
// micro-step's W, null for the first one walked; drop null: no dropout) + gadd (null or an
// output's gradient); writes gpre (B x 2H), the gradient of the pre-activations, and
// carry = G * (1 - g) in place.
cudaError_t rhn_backward_step(float* carry, const float* tmp, const float* drop, const float* gadd,
                              const float* gates, const float* sprev, float* gpre, int64_t B, int64_t H,
                              cudaStream_t stream);

}  // namespace cuda
}  // namespace lshx
