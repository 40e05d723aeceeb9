"""Spotter's setting: CIFAR-10, ResNet-18, class 0 (airplane) forgotten, with the reference
recipe (SGD 0.1, momentum 0, wd 5e-4, 200 epochs, ×0.2 at 60/120/160, crop + flip, ImageNet
normalisation).

For a GPU with the data available (TFDS's built-in builder: --config.data.download=True with
network access, or the original archive in --config.data.manual_dir); not run in CI, where a
test checks that the config validates and builds each method's first step with tiny shapes.

  unlearn-jax run experiments/cifar10_resnet18_spotter.py --config.data.download=True
"""

from unlearn_jax.config import experiment_defaults, resnet18_reference


def get_config(arg: str | None = None):
  c = resnet18_reference(experiment_defaults())
  c.name = "cifar10_resnet18_spotter"
  c.output_dir = "runs/cifar10_resnet18_spotter"
  c.data.name = "cifar10"
  c.forget.classes = (0,)
  del arg
  return c
