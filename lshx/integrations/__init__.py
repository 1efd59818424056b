"""Bridges to other libraries; each submodule imports its library only when imported itself
(lshx.integrations.optuna needs optuna: pip install 'lshx[optuna]')."""
