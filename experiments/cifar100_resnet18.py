"""CIFAR-100, ResNet-18, one class forgotten (Spotter's CIFAR-100 setting; set forget.classes
to 10 classes for its multi-class variant).

For a GPU with the data available (TFDS's built-in builder: --config.data.download=True with
network access, or the original archive in --config.data.manual_dir); not run in CI, where a
test checks that the config validates and builds each method's first step with tiny shapes.

  unlearn-jax run experiments/cifar100_resnet18.py --config.data.download=True
"""

from unlearn_jax.config import experiment_defaults


def get_config(arg: str | None = None):
  c = experiment_defaults()
  c.name = "cifar100_resnet18"
  c.output_dir = "runs/cifar100_resnet18"
  c.data.name = "cifar100"
  c.forget.classes = (0,)
  c.model.name = "resnet18"
  c.model.options = {"width": 1.0}
  c.original = {"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.0, "weight_decay": 5e-4,
                "epochs": 200, "batch_size": 128, "decay": ((60, 0.2), (120, 0.2), (160, 0.2)),
                "augment": True}
  c.profile = "resnet18"
  c.checkpoint_every = 1000
  c.evaluation.inversion.num_images = 8
  c.evaluation.inversion.iterations = 4800
  c.evaluation.inversion.restarts = 2
  c.evaluation.inversion.learning_rate = 0.03
  del arg
  return c
