"""The CUDA CSR kernels' per-row code (csrc/cuda/csr_warp.h: lanes over a row's nonzeros, the
transposing warp reduction) run on the CPU by tests/csrc/csr_warp_host.cpp, 32 threads for a
warp's lanes, against PyTorch: the forward, grad_x through the transposed structure (as the
CUDA binding computes it) and the masked weight gradient."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from lshx.ops import csr_structure

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    exe = tmp_path_factory.mktemp("csr_warp") / "csr_warp_host"
    subprocess.run(["g++", "-std=c++17", "-O1", "-pthread", "-Wall", "-Werror", "-I", str(ROOT / "csrc" / "cuda"),
                    str(ROOT / "tests" / "csrc" / "csr_warp_host.cpp"), "-o", str(exe)], check=True)
    return exe


def _run(host, tmp_path, crow, col, val, xt, bias, gt):
    rows, cols, B = crow.numel() - 1, xt.shape[0], xt.shape[1]
    idx_bytes = col.element_size()
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    with open(src, "wb") as f:
        f.write(np.array([rows, cols, B, col.numel(), idx_bytes], np.int64).tobytes())
        for t in (crow.long(), col, val.float(), xt.float(), bias.float(), gt.float()):
            f.write(t.contiguous().numpy().tobytes())
    subprocess.run([str(host), str(src), str(dst)], check=True)
    out = np.fromfile(dst, np.float32)
    assert out.size == rows * B + rows * cols
    return torch.from_numpy(out[: rows * B].reshape(rows, B)), torch.from_numpy(out[rows * B:].reshape(rows, cols))


CASES = {  # rows, cols, batch, density: one tile and two (B > 32), rows of < 32 and > 32 nonzeros
    "paper-like batch 20": (48, 40, 20, 0.33),
    "batch 1": (17, 70, 1, 0.5),
    "batch 33, long rows": (12, 300, 33, 0.9),
    "batch 64, exact tiles": (9, 64, 64, 1.0),
    "empty rows": (15, 25, 7, 0.08),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("index", [torch.int32, torch.int64])
def test_the_warp_code_matches_pytorch(host, tmp_path, case, index):
    rows, cols, B, density = CASES[case]
    g = torch.Generator().manual_seed(hash(case) % 1000)
    w = torch.randn(rows, cols, generator=g)
    m = torch.rand(rows, cols, generator=g) < density
    x, grad, bias = torch.randn(B, cols, generator=g), torch.randn(B, rows, generator=g), torch.randn(rows, generator=g)
    s = csr_structure(m)
    assert s.col.dtype == torch.int32  # what the CUDA binding now reads without converting
    val = w.flatten()[s.gather]
    y, gw = _run(host, tmp_path, s.crow, s.col.to(index), val, x.t(), bias, grad.t())
    torch.testing.assert_close(y.t(), x @ (w * m).t() + bias, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gw, (grad.t() @ x) * m, atol=1e-4, rtol=1e-4)
    # grad_x = grad @ (W * M): the same kernel on W^T's structure with val[tperm], as the binding
    tcrow, tcol, tperm = s.transposed()
    gxt, _ = _run(host, tmp_path, tcrow, tcol.to(index), val[tperm], grad.t(), torch.zeros(cols),
                  torch.zeros(cols, B))
    torch.testing.assert_close(gxt.t(), grad @ (w * m), atol=1e-4, rtol=1e-4)
