"""Analyses: pure functions over sample arrays; no I/O."""
