"""Retrain (docs/math.md §5.1): train from scratch on D_r with the original recipe, the gold
standard that unlearning approximates."""

from unlearn_jax.methods.common import SGD
from unlearn_jax.methods.registry import register
from unlearn_jax.optim import Recipe
from unlearn_jax.training.classifier import classifier_plan
from unlearn_jax.training.plan import Plan


@register("retrain", reads=("retain",),
          description="Retrain from scratch on D_r with the original recipe (the gold standard).",
          defaults={"optimizer": "adam", "learning_rate": 1e-3, "momentum": 0.0,
                    "weight_decay": 0.0, "epochs": 15, "batch_size": 64, "decay": (),
                    "augment": False, "schedule": "step"},
          profiles={"resnet18": {**SGD, "learning_rate": 0.1, "momentum": 0.0, "epochs": 200,
                                 "batch_size": 128,
                                 "decay": ((60, 0.2), (120, 0.2), (160, 0.2)), "augment": True},
                    "fashion_mnist": {"epochs": 3, "batch_size": 128}})
def retrain(hp, original, data, seed) -> Plan:
  """A fresh model of θ_o's architecture trained on D_r."""
  recipe = Recipe(hp.optimizer, hp.learning_rate, hp.momentum, hp.weight_decay, hp.epochs,
                  hp.batch_size, tuple(tuple(d) for d in hp.decay), hp.augment, hp.schedule)
  return classifier_plan(original.model, data.require("retain", "retrain"), recipe, seed)
