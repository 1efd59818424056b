// Launchers of the lshx CUDA kernels. Raw pointers and a stream only, so nvcc can
// compile the .cu files without the torch headers.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

namespace lshx {
namespace cuda {

// out[i] = mask[i] ? w[i] : 0
cudaError_t apply_mask(const float* w, const bool* mask, float* out, int64_t n, cudaStream_t stream);

// out[s, j, m] = sum_g coef[s, g, j] * w[g*H + j, m] (+ diag[s, j] when m == j; diag may be null).
cudaError_t row_combine(const float* w, const float* coef, const float* diag, float* out, int64_t K, int64_t G,
                        int64_t H, int64_t M, cudaStream_t stream);

// out[s, j] = log|r[s, j, j]| for a batch of K upper-triangular k x k blocks, row-major.
cudaError_t log_abs_diag(const float* r, float* out, int64_t K, int64_t k, cudaStream_t stream);

// y (B x out) = x (B x in) @ W^T (+ bias), W (out x in) in CSR form; bias may be null.
cudaError_t csr_linear(const float* x, const int64_t* crow, const int64_t* col, const float* val,
                       const float* bias, float* y, int64_t B, int64_t in, int64_t out, cudaStream_t stream);

}  // namespace cuda
}  // namespace lshx
