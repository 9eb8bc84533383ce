"""Engines: see :mod:`rlbound.engines.base` for the protocol."""
