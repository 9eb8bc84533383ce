"""rlbound inside other training frameworks: its verifiers as their reward functions.

* :mod:`rlbound.integrations.trl`: reward functions for ``trl.GRPOTrainer`` (the math, exact,
  code and QA verifiers, and the spurious rewards), plus :func:`~rlbound.integrations.trl.task_rows`
  to turn an rlbound task into a TRL dataset with the same prompts ``rlbound sample`` uses;
* :mod:`rlbound.integrations.trl_prerl`: PreRL, NSR-PreRL, PSR-PreRL and DSRL as a
  ``GRPOTrainer`` subclass (needs ``trl``);
* :mod:`rlbound.integrations.verl`: ``compute_score`` for verl's ``custom_reward_function``.

So the reward a model is trained on is the verdict it is later measured with (``rlbound sample``
then ``rlbound report`` on the checkpoints). Importing this package imports neither TRL nor verl.
"""
