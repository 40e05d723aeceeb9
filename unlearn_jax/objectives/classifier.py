"""The supervised objective of original and Retrain models: E CE(h_θ(x), y) on ``train``."""

from unlearn_jax.models import Model
from unlearn_jax.objectives import terms
from unlearn_jax.objectives.compose import Objective, make_objective, with_augmentation

WEIGHTS = {"ce": 1.0}


def classifier_objective(model: Model, *, augment: bool = False) -> Objective:
  """CE on the ``train`` stream (weight in ``frozen["weights"]["ce"]``), optionally on
  randomly cropped and flipped images."""
  objective = make_objective(model, {"ce": terms.cross_entropy("train")}, bn_train=True)
  return with_augmentation(objective, "train") if augment else objective
