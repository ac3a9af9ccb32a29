"""Tests of the torch-only operators (epropnp_det.ops)."""
