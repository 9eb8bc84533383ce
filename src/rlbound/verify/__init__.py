"""Verifiers: completion → :class:`Verdict`. See :mod:`rlbound.verify.base` for the protocol.

Importing this package registers the built-in verifiers ("math", "exact"). Use
:func:`verify_batch` to grade many completions (deduplicated, cached, hard time limit per check)
and :func:`verify_math` for a single one.
"""

from rlbound.verify import exact, math  # noqa: F401 - importing registers the verifiers
from rlbound.verify.base import (
    STATUS_ERROR,
    STATUS_NO_ANSWER,
    STATUS_NOT_ATTEMPTED,
    STATUS_OK,
    STATUS_TIMEOUT,
    STATUSES,
    VERIFIERS,
    Verdict,
    Verifier,
    load_verifier,
    register_verifier,
)
from rlbound.verify.exact import ExactVerifier
from rlbound.verify.extract import extract_answer, normalise
from rlbound.verify.math import MathVerifier
from rlbound.verify.pool import (
    VerifierPool,
    VerifyCache,
    shutdown_default_pool,
    verify_batch,
    verify_math,
)

__all__ = [
    "STATUSES",
    "STATUS_ERROR",
    "STATUS_NO_ANSWER",
    "STATUS_NOT_ATTEMPTED",
    "STATUS_OK",
    "STATUS_TIMEOUT",
    "VERIFIERS",
    "ExactVerifier",
    "MathVerifier",
    "Verdict",
    "Verifier",
    "VerifierPool",
    "VerifyCache",
    "extract_answer",
    "load_verifier",
    "normalise",
    "register_verifier",
    "shutdown_default_pool",
    "verify_batch",
    "verify_math",
]
