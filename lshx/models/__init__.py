"""Models: build_model(model_args) rebuilds a model from its checkpoint's model_args."""
from __future__ import annotations

from lshx.models.base import MaskedLM, detach_state
from lshx.models.lstm import LSTMLM, StackedLSTM
from lshx.models.rhn import RHNLM

__all__ = ["MaskedLM", "detach_state", "LSTMLM", "RHNLM", "StackedLSTM", "build_model"]


def build_model(model_args: dict) -> MaskedLM:
    args = dict(model_args)
    arch = args.pop("arch")
    if arch == "lstm":
        return LSTMLM(**args)
    if arch == "rhn":
        return RHNLM(**args)
    raise ValueError(f"unknown architecture {arch!r} (allowed: lstm, rhn)")
