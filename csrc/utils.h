// Small CHECK helpers shared by the CPU and CUDA bindings.
#pragma once
#include <torch/types.h>

#define LSHX_CHECK_CPU(x) TORCH_CHECK((x).device().is_cpu(), #x " must be a CPU tensor")
#define LSHX_CHECK_CUDA(x) TORCH_CHECK((x).device().is_cuda(), #x " must be a CUDA tensor")
#define LSHX_CHECK_FLOAT(x) \
  TORCH_CHECK((x).scalar_type() == at::kFloat || (x).scalar_type() == at::kDouble, \
              #x " must be float32 or float64, got ", (x).scalar_type())
#define LSHX_CHECK_DIM(x, d) TORCH_CHECK((x).dim() == (d), #x " must have ", d, " dims, got ", (x).dim())
#define LSHX_CHECK_SAME_SHAPE(a, b) \
  TORCH_CHECK((a).sizes() == (b).sizes(), #a " and " #b " must have the same shape, got ", (a).sizes(), " and ", (b).sizes())
