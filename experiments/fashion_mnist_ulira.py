"""Fashion-MNIST, U-LiRA with P1, P2 and LiRA (docs/math.md §7.5): pool = 10,000 training images
(stratified), utility = the official test set, T = 1,000 random pool examples, M = 64 MLPs (the
minimum; the spec's 128 with --config.population.models=128). Reduced epochs: originals train 5
epochs (batch 128); the methods use their ``fashion_mnist`` profile (GA and NegGrad+ without their
early stop, which cannot be vmapped).

  unlearn-jax run experiments/fashion_mnist_ulira.py
  unlearn-jax run experiments/fashion_mnist_ulira.py:class   # T = class 0's pool examples

Spotter is left out of the random variant (class unlearning only; T is random); the class variant
runs it and spotter_align. A benchmark job, not CI.
"""

from unlearn_jax.config import population_defaults


def get_config(arg: str | None = None):
  c = population_defaults()
  c.name = "fashion_mnist_ulira"
  c.protocol = "ulira"
  c.output_dir = "runs/fashion_mnist_ulira"
  c.data.name = "fashion_mnist"
  c.model.name = "mlp"
  c.pool_size = 10_000
  c.target.size = 1_000
  c.population.models = 64
  c.original.epochs = 5
  c.original.batch_size = 128
  c.profile = "fashion_mnist"
  c.hparams.ga = {"stop_forget_accuracy": None}  # the profile's 5 epochs (20 diverge here)
  c.methods = ("retrain", "ft", "ga", "neggrad_plus", "salun", "scrub", "opc")
  c.excluded = {"spotter": "class unlearning only; T is a random set"}
  if arg == "class":
    c.name = "fashion_mnist_ulira_class"
    c.output_dir = "runs/fashion_mnist_ulira_class"
    c.target.size = 0
    c.target.classes = (0,)
    c.methods = (*c.methods, "spotter", "spotter_align")
    c.excluded = {}
  elif arg is not None:
    raise ValueError(f"experiments/fashion_mnist_ulira.py: unknown variant {arg!r}; allowed: "
                     "class.")
  return c
