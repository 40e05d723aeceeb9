"""OPC's setting: CIFAR-10, ResNet-18, 3 of 10 classes forgotten, recovery attacks emphasised.

For a GPU with the data available (TFDS's built-in builder: --config.data.download=True with
network access, or the original archive in --config.data.manual_dir); not run in CI, where a
test checks that the config validates and builds each method's first step with tiny shapes.

  unlearn-jax run experiments/cifar10_resnet18_opc.py --config.data.download=True
"""

from unlearn_jax.config import experiment_defaults, resnet18_reference


def get_config(arg: str | None = None):
  c = resnet18_reference(experiment_defaults())
  c.name = "cifar10_resnet18_opc"
  c.output_dir = "runs/cifar10_resnet18_opc"
  c.data.name = "cifar10"
  c.forget.classes = (0, 1, 2)
  del arg
  return c
