"""User-facing errors.

Every problem a user can fix (a missing file, a malformed line, a k larger than n, an unknown
engine) is raised as :class:`RlboundError` with a one-line message that names the thing to fix.
The CLI prints it as ``rlbound: <message>`` and exits non-zero; tracebacks appear only under
``--debug``. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class RlboundError(Exception):
    """An error the user can act on; ``str(err)`` is a single line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))
