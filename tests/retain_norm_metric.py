"""A user's metric in one file (the registry tests' example): the mean feature norm on D_r.

Importing this module registers it; an experiment config that imports it gets a
``config.evaluation.retain_norm`` section, a results key and a table column.
"""

import dataclasses

import numpy as np

from unlearn_jax.evaluation import registry, representation


@dataclasses.dataclass(frozen=True)
class RetainNormSettings(registry.Settings):
  """``max_examples``: how many D_r images (the first ones) are averaged."""

  max_examples: int = 200


def evaluate(model, params, model_state, context, settings: RetainNormSettings, *,
             seed: int) -> tuple[dict, dict]:
  """"norm/retain" = (1/n) Σ_{x ∈ D_r[:n]} ‖z(x)‖₂ with z the penultimate features."""
  features, _ = representation.feature_sets(model, params, model_state, context.splits,
                                            sets=("retain",),
                                            max_examples=settings.max_examples)
  return {"norm/retain": float(np.linalg.norm(features["retain"], axis=1).mean())}, {}


METRIC = registry.register(registry.Metric(
    "retain_norm", evaluate, RetainNormSettings, columns=(("‖z‖ D_r", "norm/retain", ".2f"),)))
