"""Reinforcement-learning training: algorithms, rewards and the policy-gradient loop.

* :mod:`rlbound.train.algorithms`: the algorithm objects (PPO, GRPO, Dr.GRPO, RLOO, REINFORCE++,
  ReMax, DAPO, PSR / NSR / W-REINFORCE, PreRL and its filters, the DSRL schedule) and the pure
  tensor functions they are made of: advantage estimators, sample filters, overlong shaping, KL
  estimators, the clipped policy loss with its aggregations, the value loss.
* :mod:`rlbound.train.sequences`: model inputs for the two conditionings (``log P(y|x)`` and
  PreRL's ``log P(y)``) and per-token log-probabilities / entropies aligned with them.
* :mod:`rlbound.train.rewards`: reward functions on verdicts (correct, random, inverse,
  format-only, incorrect labels) and their registry.

This package's ``__init__`` imports nothing heavy; import the submodules you need.
"""
