"""The only door to the native ops of lshx._C, with pure-torch fallbacks.

When the extension cannot be loaded, every op falls back to its reference and one warning
says so. The references are also what the tests compare the native kernels with.

- native: loading lshx._C (HAS_EXTENSION), the fallback warning, cuda_version, the cache
- masked: masked_linear, masked_linear_dense, linear, masked_weight, mask_as
- lyapunov: row_combine, lyapunov_step, cholqr2, householder_qr
- csr: masked_linear's CSR path (csr_linear, use_csr, CSRStructure, the CSR_* limits)
- lstm: the sparse LSTM recurrence (lstm_recurrence, use_sparse_recurrence, persistent_fits)
- rhn: the RHN recurrence (rhn_recurrence)

The public names are re-exported here. The flags and limits here are copies: to change one
(a test's monkeypatch), set it on the module that reads it, e.g. ops.csr.CSR_MIN_NUMEL.
"""
from lshx.ops.native import HAS_EXTENSION, cuda_version
from lshx.ops.csr import (CSR_MAX_DENSITY, CSR_MIN_NUMEL, CSR_TRAIN_MAX_DENSITY, CUDA_CSR_MAX_DENSITY,
                          CSRStructure, csr_linear, csr_linear_backward_ref, csr_linear_ref, csr_structure,
                          mask_density, use_csr)
from lshx.ops.masked import (linear, mask_as, masked_linear, masked_linear_backward_ref, masked_linear_dense,
                             masked_linear_ref, masked_weight)
from lshx.ops.lyapunov import (cholqr2, householder_qr, lyapunov_step, lyapunov_step_ref, row_combine,
                               row_combine_ref)
from lshx.ops.lstm import (PERSISTENT_MAX_DENSITY, RECURRENCE_CPU_MAX_DENSITY, lstm_recurrence,
                           lstm_recurrence_ref, persistent_fits, use_sparse_recurrence)
from lshx.ops.rhn import rhn_recurrence, rhn_recurrence_ref

__all__ = [
    "HAS_EXTENSION", "cuda_version",
    "CSR_MAX_DENSITY", "CSR_MIN_NUMEL", "CSR_TRAIN_MAX_DENSITY", "CUDA_CSR_MAX_DENSITY", "CSRStructure",
    "csr_linear", "csr_linear_backward_ref", "csr_linear_ref", "csr_structure", "mask_density", "use_csr",
    "linear", "mask_as", "masked_linear", "masked_linear_backward_ref", "masked_linear_dense",
    "masked_linear_ref", "masked_weight",
    "cholqr2", "householder_qr", "lyapunov_step", "lyapunov_step_ref", "row_combine", "row_combine_ref",
    "PERSISTENT_MAX_DENSITY", "RECURRENCE_CPU_MAX_DENSITY", "lstm_recurrence", "lstm_recurrence_ref",
    "persistent_fits", "use_sparse_recurrence",
    "rhn_recurrence", "rhn_recurrence_ref",
]
