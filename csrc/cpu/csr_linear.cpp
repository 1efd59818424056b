// CPU CSR path of the masked linear map, for low densities: y = x @ W^T + b with W (out x in)
// in CSR form (crow, col, val). The structure is rebuilt by the caller at each topology
// update; the values are gathered from the dense weight at each call.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../utils.h"

namespace lshx {

at::Tensor csr_linear_cpu(const at::Tensor& x, const at::Tensor& crow_, const at::Tensor& col_,
                          const at::Tensor& val_, const c10::optional<at::Tensor>& bias) {
  LSHX_CHECK_CPU(x);
  LSHX_CHECK_FLOAT(x);
  TORCH_CHECK(crow_.scalar_type() == at::kLong, "csr_linear: crow must be int64");
  TORCH_CHECK(col_.scalar_type() == at::kLong || col_.scalar_type() == at::kInt, "csr_linear: col must be int32/64");
  TORCH_CHECK(val_.scalar_type() == x.scalar_type(), "csr_linear: values and x dtypes differ");
  const int64_t out = crow_.numel() - 1;
  const int64_t in = x.size(-1);
  auto x2 = x.reshape({-1, in});
  const int64_t B = x2.size(0);
  // x^T (in x Bp), the batch zero-padded to a multiple of 8: each nonzero then reads one
  // contiguous row, in fixed 8-wide chunks the compiler vectorizes
  const int64_t Bp = (B + 7) / 8 * 8;
  auto xt = at::zeros({in, Bp}, x.options());
  xt.narrow(1, 0, B).copy_(x2.t());
  auto crow = crow_.contiguous(), col = col_.contiguous(), val = val_.contiguous();
  auto yt = at::empty({out, Bp}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "csr_linear_cpu", [&] {
    const scalar_t* X = xt.data_ptr<scalar_t>();
    const scalar_t* V = val.data_ptr<scalar_t>();
    const int64_t* R = crow.data_ptr<int64_t>();
    scalar_t* Y = yt.data_ptr<scalar_t>();
    auto run = [&](auto col_ptr) {
      at::parallel_for(0, out, 16, [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) {
          for (int64_t q0 = 0; q0 < Bp; q0 += 8) {
            scalar_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t p = R[o]; p < R[o + 1]; ++p) {
              const scalar_t v = V[p];
              const scalar_t* xr = X + static_cast<int64_t>(col_ptr[p]) * Bp + q0;
              for (int q = 0; q < 8; ++q) acc[q] += v * xr[q];
            }
            scalar_t* y = Y + o * Bp + q0;
            for (int q = 0; q < 8; ++q) y[q] = acc[q];
          }
        }
      });
    };
    if (col.scalar_type() == at::kInt) run(col.data_ptr<int32_t>());
    else run(col.data_ptr<int64_t>());
  });
  auto y = yt.narrow(1, 0, B).t();
  if (bias.has_value() && bias->defined()) y = y + *bias;
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  return y.contiguous().reshape(sizes);
}

TORCH_LIBRARY_IMPL(lshx, CPU, m) { m.impl("csr_linear", &csr_linear_cpu); }

}  // namespace lshx
