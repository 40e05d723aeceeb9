"""Digits, small CNN, sequential deletion requests (unlearn_jax/sequence.py, docs/math.md §6.9):
classes 0, then 3, then 7, each request applied to the model the previous one left; after each,
every method against Retrain on the cumulative forget set. Every method and, as digits.py, every
metric and attack (with relearning on D_r, the weight-space predictors, ToW and unlearning
inversion) but gradient inversion and few-shot relearning.

  unlearn-jax run experiments/digits_sequential.py
  unlearn-jax run experiments/digits_sequential.py:random   # 3 random batches of 5 % each
  unlearn-jax run experiments/digits_sequential.py:quick    # the test's variant

``random``: the methods of fashion_mnist_random10.py (no Spotter, no UNSIR; GA and SCRUB stop
ascending at 97 %, about the original's test accuracy); the class-only metrics show —.
``quick``: two requests, reduced epochs, Retrain, Spotter and OPC, and only the output metrics
(UA/RA/TA, MIA, gap).
"""

import fashion_mnist_random10

from unlearn_jax.config import LATER_EVALUATIONS, experiment_defaults, later_evaluations


def get_config(arg: str | None = None):
  c = experiment_defaults()
  c.name = "digits_sequential"
  c.output_dir = "runs/digits_sequential"
  c.data.name = "digits"
  c.model.name = "small_cnn"
  c.sequence.classes = ((0,), (3,), (7,))
  later_evaluations(c, steps=100, eval_every=10)  # as digits.py
  c.evaluation.inversion.enabled = False
  c.evaluation.relearn.enabled = False
  if arg == "random":
    c.name = "digits_sequential_random"
    c.output_dir = "runs/digits_sequential_random"
    c.sequence.classes = ()
    c.sequence.batches = 3
    c.sequence.batch_fraction = 0.05
    c.methods = fashion_mnist_random10.get_config().methods
    # Stop ascending at the original's test accuracy (about 97 %), as fashion_mnist_random10.py.
    c.hparams.ga = {"stop_forget_accuracy": 97.0}
    c.hparams.scrub = {"stop_forget_accuracy": 97.0}
  elif arg == "quick":
    c.name = "digits_sequential_quick"
    c.output_dir = "runs/digits_sequential_quick"
    c.sequence.classes = ((0,), (3,))
    c.original.epochs = 8
    c.retrain_seeds = (1,)
    c.methods = ("retrain", "spotter", "opc")
    for name in ("ou", "pra", "recovery", *LATER_EVALUATIONS):
      c.evaluation[name].enabled = False
    c.evaluation.representation = False
  elif arg is not None:
    raise ValueError(f"experiments/digits_sequential.py: unknown variant {arg!r}; allowed: "
                     "random, quick.")
  return c
