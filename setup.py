"""Build of lshx and its native extension lshx._C.

FORCE_CUDA=1 builds the CUDA kernels; FORCE_ONLY_CPU=1 never does. Otherwise CUDA is
built when torch is a CUDA build and nvcc is found (no GPU is queried).
"""
import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch

VERSION = "0.1.0"
HERE = os.path.dirname(os.path.abspath(__file__))


def want_cuda() -> bool:
    if os.environ.get("FORCE_ONLY_CPU", "0") == "1":
        return False
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def nvcc_flags() -> list:
    """The nvcc flags, shared with `make nvcc-check` (csrc/cuda/nvcc.flags). No --use_fast_math:
    its approximate tanh/exp/division differ from the CPU ops by more than the tests allow."""
    with open(os.path.join(HERE, "csrc", "cuda", "nvcc.flags")) as f:
        return f.read().split()


def extension():
    cpu_sources = ["csrc/lshx.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    # at::parallel_for is an inline OpenMP loop: without -fopenmp it silently runs serially
    cxx = ["-O3", "-std=c++17", "-fopenmp"]
    link = ["-fopenmp"]
    if want_cuda():
        sources = cpu_sources + sorted(glob.glob("csrc/cuda/*.cpp")) + sorted(glob.glob("csrc/cuda/*.cu"))
        return CUDAExtension(
            "lshx._C", sources, define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": nvcc_flags()},
            extra_link_args=link,
        )
    return CppExtension("lshx._C", cpu_sources, extra_compile_args={"cxx": cxx}, extra_link_args=link)


setup(
    name="lshx",
    version=VERSION,
    description="LS-based Hyperpruning: search for the best way to prune a recurrent network",
    python_requires=">=3.10",
    packages=["lshx", "lshx.models", "lshx.ops", "lshx.sparse", "lshx.search", "lshx.integrations", "lshx.cli"],
    package_dir={"lshx.cli": "cli"},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "scikit-learn>=1.3",
        "hyperopt==0.3.0",  # ask/tell use relies on its trial-document internals
        "lightgbm>=4.0",  # needed by hyperopt's ATPE
        "click>=8.1",
        "matplotlib>=3.7",
    ],
    # optuna: the --hpo optuna backend and lshx.integrations.optuna; ray: --executor ray (the
    # core package is enough, `ray start` included; `make setup` pins the version the tests ran)
    extras_require={"ray": ["ray>=2.9"], "optuna": ["optuna>=3.4"], "test": ["pytest>=7"]},
    entry_points={"console_scripts": ["lshx=lshx.cli.main:main"]},
)
