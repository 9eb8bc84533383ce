"""Tasks: problem sets with their prompt template and verifier (see :mod:`rlbound.tasks.base`)."""
