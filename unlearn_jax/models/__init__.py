"""Flax models behind one interface: ``apply`` returns (features, logits, model_state).

Images enter in [0, 1] with shape [batch, H, W, C]; models normalise inside. ``params`` and
``model_state`` (batch-norm running statistics, ``{}`` for models without batch norm) are separate
pytrees so training can differentiate ``params`` alone. Batch-norm mode is explicit: ``train=True``
normalises with batch statistics and returns updated running statistics; ``train=False`` uses the
running statistics and returns ``model_state`` unchanged.
"""

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from unlearn_jax.models.resnet import ResNet18
from unlearn_jax.models.small import MLP, SmallCNN

Params = Any
ModelState = Any

_BUILDERS = {"small_cnn": SmallCNN, "mlp": MLP, "resnet18": ResNet18}
MODEL_NAMES = tuple(_BUILDERS)


@functools.cache
def _initializer(model: "Model"):
  return jax.jit(lambda key: model.module.init(key, jnp.zeros((1, *model.input_shape)),
                                               train=False))


@dataclasses.dataclass(frozen=True)
class Model:
  """A Flax module with its input shape; every attack and metric uses only this interface."""

  name: str
  module: nn.Module
  input_shape: tuple[int, int, int]
  num_classes: int

  def init(self, key: jax.Array) -> tuple[Params, ModelState]:
    """Fresh ``(params, model_state)`` from ``key`` (one compiled initialiser per model: a
    population initialises hundreds; bit-identical to eager ``module.init`` for the small CNN
    and the MLP)."""
    variables = _initializer(self)(key)
    return variables["params"], variables.get("batch_stats", {})

  def check_images(self, images: jax.Array) -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
      expected = ", ".join(map(str, self.input_shape))
      raise ValueError(f"images: model '{self.name}' expects shape [batch, {expected}], "
                       f"got {tuple(images.shape)}.")

  def _variables(self, params, model_state):
    return {"params": params, **({"batch_stats": model_state} if model_state else {})}

  def apply(self, params: Params, model_state: ModelState, images: jax.Array, *,
            train: bool = False) -> tuple[jax.Array, jax.Array, ModelState]:
    """``(features [B, d], logits [B, C], model_state)`` for images in [0, 1]."""
    self.check_images(images)
    variables = self._variables(params, model_state)
    if train and model_state:
      (features, logits), updates = self.module.apply(
          variables, images, train=True, mutable=["batch_stats"])
      return features, logits, updates["batch_stats"]
    features, logits = self.module.apply(variables, images, train=train)
    return features, logits, model_state

  def stage_features(self, params: Params, model_state: ModelState,
                     images: jax.Array) -> dict[str, jax.Array]:
    """Globally pooled activations of every stage (eval mode), ending with ``penultimate``."""
    self.check_images(images)
    (features, _), state = self.module.apply(
        self._variables(params, model_state), images, train=False, mutable=["intermediates"])
    stages = {k: v[0] for k, v in state["intermediates"].items()}
    return {**stages, "penultimate": features}

  @property
  def feature_dim(self) -> int:
    params, _ = jax.eval_shape(self.init, jax.random.key(0))
    return params["head"]["kernel"].shape[0]

  def blocks(self, params: Params) -> list[list[str]]:
    """Top-level parameter groups in forward order (for CF-k / EU-k's "last k layers")."""
    groups: dict[str, list[str]] = {}
    for name in params:
      groups.setdefault(name.split("_")[0], []).append(name)
    return list(groups.values())


@functools.cache
def eval_forward(model: Model):
  """Jitted eval-mode ``(features, logits)`` of ``fn(params, model_state, images, *_)``; trailing
  arguments (labels, mask, batch index of per-batch maps over a dataset) are ignored."""
  return jax.jit(lambda params, model_state, images, *_: model.apply(params, model_state,
                                                                      images)[:2])


def apply_head(params: Params, features: jax.Array) -> jax.Array:
  """Logits s = z W + b from penultimate features with the model's final layer."""
  bias = params["head"]["bias"]
  return features @ params["head"]["kernel"] + bias.reshape((1,) * (features.ndim - 1) + (-1,))


def final_layer(params, *, field: str = "params") -> tuple[jax.Array, jax.Array]:
  """The head ``(kernel [d, C], bias [C])`` of ``params``: the layer s = z W + b every attack edits.

  Raises:
    ValueError: ``params`` has no ``head`` with a 2-D ``kernel`` and a matching ``bias``.
  """
  head = params.get("head") if isinstance(params, Mapping) else None
  if not isinstance(head, Mapping) or "kernel" not in head or "bias" not in head:
    raise ValueError(f"{field}: no final layer {field}['head'] with 'kernel' and 'bias'; attacks "
                     "need a model that returns (features, logits) with logits from a Dense "
                     "named 'head'.")
  kernel, bias = head["kernel"], head["bias"]
  if kernel.ndim != 2 or bias.shape != (kernel.shape[1],):
    raise ValueError(f"{field}.head: kernel {tuple(kernel.shape)} and bias {tuple(bias.shape)} "
                     "are not a [d, C] / [C] pair.")
  return kernel, bias


def make_model(name: str, *, num_classes: int, input_shape: Sequence[int],
               mean: Sequence[float], std: Sequence[float], **options) -> Model:
  """Builds a registered model.

  Args:
    name: one of :data:`MODEL_NAMES`.
    num_classes, input_shape (H, W, C), mean, std: from the dataset.
    **options: module fields, e.g. ``width`` (resnet18), ``channels``/``hidden`` (small_cnn),
      ``hidden`` (mlp).

  Raises:
    ValueError: unknown ``name`` or option.
  """
  if name not in _BUILDERS:
    raise ValueError(f"model.name: unknown model {name!r}; known: {', '.join(MODEL_NAMES)}.")
  cls = _BUILDERS[name]
  allowed = {f.name for f in dataclasses.fields(cls)} - {"num_classes", "mean", "std", "parent",
                                                         "name"}
  unknown = set(options) - allowed
  if unknown:
    raise ValueError(f"model: unknown option(s) {sorted(unknown)} for {name!r}; "
                     f"allowed: {sorted(allowed)}.")
  options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
  module = cls(num_classes=num_classes, mean=tuple(mean), std=tuple(std), **options)
  return Model(name, module, tuple(input_shape), num_classes)
