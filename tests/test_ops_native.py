"""lshx.ops.native: the door to lshx._C."""
import pytest
import torch

from lshx import ops

pytestmark = pytest.mark.skipif(not ops.HAS_EXTENSION, reason="lshx._C is not built")


def test_cuda_version_on_cpu_build():
    assert isinstance(ops.cuda_version(), int)
    if not torch.cuda.is_available():
        assert ops.cuda_version() in (-1,) or ops.cuda_version() > 0
