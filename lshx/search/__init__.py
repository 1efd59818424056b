"""LS-based Hyperpruning search."""
