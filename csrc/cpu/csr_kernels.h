// The CPU CSR SpMM and its batch-last layout, shared by the CSR linear map and the sparse
// LSTM recurrence.
#pragma once
#include <ATen/ATen.h>

namespace lshx {

// (in x Bp) transposed copy of a (B x in) matrix, the batch zero-padded to Bp, a multiple of 8.
at::Tensor batch_last(const at::Tensor& x2);

// (rows x Bp) = W (rows x cols, CSR: crow int64, col int32/64, val) @ xt (cols x Bp), with the
// batch on the fast axis (Bp a multiple of 8). Parallel over rows; float32 uses AVX2/FMA
// when the CPU has it.
at::Tensor spmm_batch_last(const at::Tensor& xt, const at::Tensor& crow, const at::Tensor& col,
                           const at::Tensor& val);

}  // namespace lshx
