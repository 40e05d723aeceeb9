"""Digits (scikit-learn's real 8×8 images), small CNN, class 0 forgotten: every method, metric
and attack, with relearning on D_r (10 epochs of D_r: 100 steps of 128), the weight-space
predictors, ToW and unlearning inversion turned on. The README's main command; about two minutes
on a 2-core CPU.

  unlearn-jax run experiments/digits.py
  unlearn-jax run experiments/digits.py:quick     # reduced epochs (the test's variant)
"""

from unlearn_jax.config import experiment_defaults, later_evaluations


def get_config(arg: str | None = None):
  c = experiment_defaults()
  c.name = "digits"
  c.output_dir = "runs/digits"
  c.data.name = "digits"
  c.forget.classes = (0,)
  c.model.name = "small_cnn"
  later_evaluations(c, steps=100, eval_every=10)  # 100 steps: 10 epochs of D_r
  if arg == "quick":
    c.name = "digits_quick"
    c.output_dir = "runs/digits_quick"
    c.original.epochs = 8
    c.retrain_seeds = (1, 2)
    c.evaluation.inversion.iterations = 100
    c.evaluation.pra.shots = (5,)
    c.evaluation.pra.num_draws = 2
    c.evaluation.relearn_retain.steps = 20
    c.evaluation.uia.iterations = 100
    c.evaluation.uia.probe_steps = 30
  elif arg is not None:
    raise ValueError(f"experiments/digits.py: unknown variant {arg!r}; allowed: quick.")
  return c
