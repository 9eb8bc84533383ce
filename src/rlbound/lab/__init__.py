"""The lab: a procedurally generated reasoning world small enough for a tiny CPU model.

:mod:`rlbound.lab.world` registers the task families ``countdown`` and ``programs``;
:mod:`rlbound.lab.countdown` holds the countdown generator, solution enumerator, trace writer and
the ``countdown`` verifier; :mod:`rlbound.lab.programs` the straight-line program family.
"""
