"""Spotter's setting: CIFAR-10, ResNet-18, class 0 (airplane) forgotten, with the reference
recipe (SGD 0.1, momentum 0, wd 5e-4, 200 epochs, ×0.2 at 60/120/160, crop + flip, ImageNet
normalisation).

For a GPU with the data available (TFDS's built-in builder: --config.data.download=True with
network access, or the original archive in --config.data.manual_dir); not run in CI, where a
test checks that the config validates and builds each method's first step with tiny shapes.

  unlearn-jax run experiments/cifar10_resnet18_spotter.py --config.data.download=True
"""

from unlearn_jax.config import experiment_defaults


def get_config(arg: str | None = None):
  c = experiment_defaults()
  c.name = "cifar10_resnet18_spotter"
  c.output_dir = "runs/cifar10_resnet18_spotter"
  c.data.name = "cifar10"
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
