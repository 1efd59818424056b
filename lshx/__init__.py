"""lshx: LS-based Hyperpruning of sparse recurrent language models.

Library entry points (imported on first use, so `import lshx` stays cheap):
lshx.lyapunov_spectrum(rnn, inputs, ...) and lshx.lyapunov_spectrum_fn(step, h0, inputs, ...)
(lshx.lyapunov), DST on any nn.Module (lshx.sparse.any_model), and the Optuna pruner
(lshx.integrations.optuna).
"""
__version__ = "0.1.0"

_LAZY = {"lyapunov_spectrum": "lshx.lyapunov", "lyapunov_spectrum_fn": "lshx.lyapunov"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lshx' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
