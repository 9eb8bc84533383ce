"""Verifiers: see :mod:`rlbound.verify.base` for the protocol."""
