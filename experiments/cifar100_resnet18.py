"""CIFAR-100, ResNet-18, one class forgotten (Spotter's CIFAR-100 setting; set forget.classes
to 10 classes for its multi-class variant).

For a GPU with the data available (TFDS's built-in builder: --config.data.download=True with
network access, or the original archive in --config.data.manual_dir); not run in CI, where a
test checks that the config validates and builds each method's first step with tiny shapes.

  unlearn-jax run experiments/cifar100_resnet18.py --config.data.download=True
"""

from unlearn_jax.config import experiment_defaults, resnet18_reference


def get_config(arg: str | None = None):
  c = resnet18_reference(experiment_defaults())
  c.name = "cifar100_resnet18"
  c.output_dir = "runs/cifar100_resnet18"
  c.data.name = "cifar100"
  c.forget.classes = (0,)
  del arg
  return c
