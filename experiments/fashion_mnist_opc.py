"""OPC's setting on Fashion-MNIST: 3 of 10 classes forgotten (its "30 % class unlearning"),
small CNN, the methods of OPC's recovery figure, recovery attacks emphasised; 3 trials (seeds
0, 1, 2; forgetting classes (0, 1, 2), (3, 4, 5), (6, 7, 8)); mean ± std.

  unlearn-jax run experiments/fashion_mnist_opc.py

OPC's "NGD" (noisy gradient descent) is not implemented. Recovery (FM, HR, HeadSwap), PRA and
gradient inversion run on every model listed under evaluation.inversion.models.
"""

from unlearn_jax.config import experiment_defaults


def get_config(arg: str | None = None):
  c = experiment_defaults()
  c.name = "fashion_mnist_opc"
  c.output_dir = "runs/fashion_mnist_opc"
  c.data.name = "fashion_mnist"
  c.model.name = "small_cnn"
  c.original.epochs = 3
  c.original.batch_size = 128
  c.profile = "fashion_mnist"
  c.methods = ("retrain", "opc", "ga", "rl", "boundary_expanding", "ft", "neggrad_plus", "eu_k",
               "cf_k", "salun", "scrub", "bad_teacher", "l1_sparse", "spotter")
  c.trials = (0, 1, 2)
  c.trial_classes = ((0, 1, 2), (3, 4, 5), (6, 7, 8))
  c.evaluation.inversion.models = ("original", "retrain", "opc", "ga", "salun", "scrub",
                                   "spotter")
  del arg
  return c
