"""SVHN, ResNet-18, 3 of 10 classes forgotten (OPC's SVHN setting).

For a GPU with the data available (TFDS's built-in builder: --config.data.download=True with
network access, or the original archive in --config.data.manual_dir); not run in CI, where a
test checks that the config validates and builds each method's first step with tiny shapes.

  unlearn-jax run experiments/svhn_resnet18.py --config.data.download=True
"""

from unlearn_jax.config import experiment_defaults, resnet18_reference


def get_config(arg: str | None = None):
  c = resnet18_reference(experiment_defaults())
  c.name = "svhn_resnet18"
  c.output_dir = "runs/svhn_resnet18"
  c.data.name = "svhn_cropped"
  c.forget.classes = (0, 1, 2)
  del arg
  return c
