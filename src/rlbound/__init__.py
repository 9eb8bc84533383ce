"""rlbound: did RL give a model new reasoning, or only sharpen what its base model could sample?

The Python API (heavy modules load on first use)::

    import rlbound
    rlbound.pass_at_k(n, c, k)                 # unbiased pass@k, ints or numpy arrays
    run = rlbound.load_run("runs/base")        # a stored run: run.meta, run.table, run.samples
    rlbound.verify_math("\\\\frac{1}{2}", "... so the answer is \\\\boxed{0.5}")  # a Verdict
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "pass_at_k": "rlbound.analysis.passk",
    "load_run": "rlbound.store",
    "verify_math": "rlbound.verify.pool",
    "Verdict": "rlbound.verify.base",
    "Problem": "rlbound.tasks.base",
    "SamplingParams": "rlbound.engines.base",
    "RlboundError": "rlbound.errors",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'rlbound' has no attribute {name!r}")
