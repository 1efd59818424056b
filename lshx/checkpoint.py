"""Checkpoints: one dict, written atomically, loaded with weights_only=True."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from lshx.errors import CheckpointError, WriteError
from lshx.paths import write_atomic

REQUIRED = ("model_args", "state_dict", "masks", "config", "epoch", "val_ppl", "vocab", "lshx_version")


def save_atomic(obj: dict, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    try:
        return write_atomic(path, lambda f: torch.save(obj, f), binary=True)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}; rerun with --resume") from None
    except RuntimeError as exc:  # how torch's writer reports a full disk or a file-size limit
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "RuntimeError"
        raise WriteError(f"cannot write {path}: the write failed (a full disk, or a file-size limit?): "
                         f"{first}; rerun with --resume") from None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Loads safely (no pickled code); refuses anything that is not an lshx checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load {path} safely (weights_only): {first}") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED):
        missing = [k for k in REQUIRED if not isinstance(ckpt, dict) or k not in ckpt]
        raise CheckpointError(f"{path} is not an lshx checkpoint (missing: {', '.join(missing)})")
    return ckpt
