"""Torch-only operators (no mm* imports anywhere below this package)."""
