"""Fashion-MNIST, every method on forget sets of low, medium and high memorization (RUM, Zhao et
al., NeurIPS 2024; docs/math.md §7.8), reduced to run on a 2-core CPU: pool = 4,000 training
images (stratified), utility = the official test set; mem(i) from M = 64 MLPs on balanced halves
(32 with and 32 without each example); three disjoint forget sets of 200 examples; K = 16
originals on the pool, each unlearning every stratum with every method, against 2K = 32 Retrain
models per stratum. Originals train 5 epochs (batch 128); the methods use their
``fashion_mnist`` profile (GA and NegGrad+ without their early stop, which cannot be vmapped).

  unlearn-jax run experiments/fashion_mnist_memorization.py

Measured: 811 s wall (the memorization population 98 s of it) on the 2-core CPU while about 17
other processes shared it. Spotter is left out (class unlearning only). A benchmark job, not CI.
"""

from unlearn_jax.config import population_defaults


def get_config(arg: str | None = None):
  c = population_defaults()
  c.name = "fashion_mnist_memorization"
  c.protocol = "memorization"
  c.output_dir = "runs/fashion_mnist_memorization"
  c.data.name = "fashion_mnist"
  c.model.name = "mlp"
  c.pool_size = 4_000
  c.target.size = 200
  c.memorization.models = 64
  c.population.models = 16
  c.original.epochs = 5
  c.original.batch_size = 128
  c.profile = "fashion_mnist"
  c.hparams.ga = {"stop_forget_accuracy": None}  # the profile's 5 epochs
  c.methods = ("retrain", "ft", "ga", "neggrad_plus", "salun", "scrub", "opc")
  c.excluded = {"spotter": "class unlearning only; the strata are sets of examples"}
  if arg is not None:
    raise ValueError(f"experiments/fashion_mnist_memorization.py: unknown variant {arg!r}.")
  return c
