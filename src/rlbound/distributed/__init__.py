"""Running engines on several processes or machines through Ray (see :mod:`.replicas`)."""

from rlbound.distributed.replicas import ReplicaEngine

__all__ = ["ReplicaEngine"]
