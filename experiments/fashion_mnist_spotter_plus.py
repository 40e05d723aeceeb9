"""Spotter's plug-and-play claim on Fashion-MNIST: each method X beside ``spotter_plus_X`` (X's plan
with Spotter's terms added; unlearn_jax/methods/spotter_plus.py), small CNN, one forgotten class;
3 trials (seed 0 / class 0, seed 1 / class 3, seed 2 / class 7: the originals and Retrain models
of experiments/fashion_mnist_class.py, reused from the cache); UA, RA, TA, MIA, the gap to Retrain
and OU@ε (what the claim reads), PRA; the costlier attacks are off.

  unlearn-jax run experiments/fashion_mnist_spotter_plus.py
"""

import fashion_mnist_class

from unlearn_jax.methods.spotter_plus import PLUGGED


def get_config(arg: str | None = None):
  del arg
  c = fashion_mnist_class.get_config()
  c.name, c.output_dir = "fashion_mnist_spotter_plus", "runs/fashion_mnist_spotter_plus"
  c.methods = ("retrain", *(m for x in PLUGGED for m in (x, f"spotter_plus_{x}")))
  c.evaluation.recovery.enabled = False
  c.evaluation.inversion.enabled = False
  c.evaluation.relearn.enabled = False
  c.evaluation.representation = False
  return c
