"""lshx: LS-based Hyperpruning of sparse recurrent language models."""
__version__ = "0.1.0"
