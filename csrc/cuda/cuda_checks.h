// What every CUDA binding (csrc/cuda/*_bindings.cpp) shares: error, dtype and device checks and
// the device guard. The kernels themselves (csrc/cuda/*.cu) see raw pointers only.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>   // the device guard: ops run on their inputs' device, not device 0
#include <c10/cuda/CUDAStream.h>  // the stream only: no cuBLAS/cuSPARSE headers needed

#include "../utils.h"
#include "kernels.h"

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
