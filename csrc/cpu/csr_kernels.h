// The CPU CSR SpMM shared by the CSR linear map and the sparse LSTM recurrence.
#pragma once
#include <ATen/ATen.h>

namespace lshx {

// (rows x Bp) = W (rows x cols, CSR: crow int64, col int32/64, val) @ xt (cols x Bp), with the
// batch on the fast axis (Bp a multiple of 8). Parallel over rows; float32 uses AVX2/FMA
// when the CPU has it.
at::Tensor spmm_batch_last(const at::Tensor& xt, const at::Tensor& crow, const at::Tensor& col,
                           const at::Tensor& val);

}  // namespace lshx
