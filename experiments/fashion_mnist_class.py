"""Fashion-MNIST (full 70,000), small CNN, one forgotten class; 3 trials with a different class
each (seed 0 / class 0, seed 1 / class 3, seed 2 / class 7); every method; mean ± std.

  unlearn-jax run experiments/fashion_mnist_class.py

Needs the IDX files (``apt-get install dataset-fashion-mnist``, or --config.data.source_dir).
Methods use their ``fashion_mnist`` profile (the small-CNN values with epochs set for 54,000
retained images). About an hour per trial on a 2-core CPU (see docs/results.md).
"""

from unlearn_jax.config import experiment_defaults


def get_config(arg: str | None = None):
  c = experiment_defaults()
  c.name = "fashion_mnist_class"
  c.output_dir = "runs/fashion_mnist_class"
  c.data.name = "fashion_mnist"
  c.model.name = "small_cnn"
  c.original.epochs = 3
  c.original.batch_size = 128
  c.profile = "fashion_mnist"
  c.trials = (0, 1, 2)
  c.trial_classes = ((0,), (3,), (7,))
  c.evaluation.inversion.models = ("original", "retrain", "ga", "spotter", "opc")
  del arg
  return c
