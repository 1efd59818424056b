"""The Lyapunov spectrum (paper Eq. 1): one loop (lshx.lyapunov.loop.run) that owns the QR
choice and the re-orthonormalization interval, and three ways to step a recurrence through it:

- lshx's own models: model_spectrum(model, tokens, LSConfig(...)) (lshx.lyapunov.models),
  what a search measures and `lshx ls-compute` prints;
- torch.nn.LSTM, GRU, RNN: lyapunov_spectrum(rnn, inputs, ...) (lshx.lyapunov.torch_nn), also
  lshx.lyapunov_spectrum;
- any step function: lyapunov_spectrum_fn(step, h0, inputs, ...) (lshx.lyapunov.step_fn), also
  lshx.lyapunov_spectrum_fn.

docs/lyapunov.md has the options, the accuracy contract and the measured speed. The names
below load their module on first use, so that `lshx.lyapunov.config` stays cheap to import.
"""
from lshx.lyapunov.config import (AUTO, IMPLS, PROPAGATE, QR_METHODS, STATES, WARMUP_MODES, LSConfig,
                                  LSResult)

_LAZY = {"model_spectrum": "models", "sample_windows": "models", "lyapunov_spectrum": "torch_nn",
         "state_size": "torch_nn", "lyapunov_spectrum_fn": "step_fn"}

__all__ = ["AUTO", "IMPLS", "PROPAGATE", "QR_METHODS", "STATES", "WARMUP_MODES", "LSConfig", "LSResult",
           *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"lshx.lyapunov.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'lshx.lyapunov' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
