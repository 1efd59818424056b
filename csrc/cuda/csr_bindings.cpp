// ATen bindings of the CSR SpMM CUDA kernels (csrc/cuda/csr_linear.cu), float32.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda_checks.h"

namespace lshx {

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

// Calls f with col's data as the kernels read it: int32 (CSRStructure's) or int64, unconverted.
template <class F>
static cudaError_t with_index(const at::Tensor& col, F f) {
  if (col.scalar_type() == at::kInt) return f(col.data_ptr<int32_t>());
  return f(col.data_ptr<int64_t>());
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
  auto col = col_.contiguous(), crow_c = crow.contiguous(), val_c = val.contiguous();
  auto yt = at::empty({out, B}, x.options());
  auto b = has_bias ? bias->contiguous() : at::Tensor();
  LSHX_CUDA_OK(with_index(col, [&](auto idx) {
    return cuda::csr_spmm_bt(xt.data_ptr<float>(), crow_c.data_ptr<int64_t>(), idx, val_c.data_ptr<float>(),
                             has_bias ? b.data_ptr<float>() : nullptr, yt.data_ptr<float>(), out, B,
                             c10::cuda::getCurrentCUDAStream());
  }));
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
  auto col = col_.contiguous(), tcol = tcol_.contiguous(), crow_c = crow.contiguous(), tcrow_c = tcrow.contiguous();
  auto tval = val.index_select(0, tperm).contiguous();
  auto gxt = at::empty({in, B}, x.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  LSHX_CUDA_OK(with_index(tcol, [&](auto idx) {
    return cuda::csr_spmm_bt(gt.data_ptr<float>(), tcrow_c.data_ptr<int64_t>(), idx, tval.data_ptr<float>(), nullptr,
                             gxt.data_ptr<float>(), in, B, stream);
  }));
  auto gw = at::empty({out, in}, x.options());
  LSHX_CUDA_OK(with_index(col, [&](auto idx) {
    return cuda::csr_sddmm_bt(xt.data_ptr<float>(), gt.data_ptr<float>(), crow_c.data_ptr<int64_t>(), idx,
                              gw.data_ptr<float>(), out, in, B, stream);
  }));
  return {gxt.t().contiguous().reshape(x.sizes()), gw};
}

TORCH_LIBRARY_IMPL(lshx, CUDA, m) {
  m.impl("csr_linear", &csr_linear_cuda);
  m.impl("csr_linear_backward", &csr_linear_backward_cuda);
}

}  // namespace lshx
