"""Flax models behind one interface: ``apply`` returns (features, logits, model_state).

Images enter in [0, 1] with shape [batch, H, W, C]; models normalise inside. ``params`` and
``model_state`` (batch-norm running statistics, ``{}`` for models without batch norm) are separate
pytrees so training can differentiate ``params`` alone. Batch-norm mode is explicit: ``train=True``
normalises with batch statistics and returns updated running statistics; ``train=False`` uses the
running statistics and returns ``model_state`` unchanged. A ``key`` given to a training-mode
``apply`` feeds the module's RNG collections (Dropout).

Your own module (Linen, or NNX through ``nnx.bridge.to_linen``) joins through
:meth:`Model.from_module`: its ``__call__(x, train)`` returns ``(features, logits)``, and the
attacks that edit the final layer (PRA, FM/HR, HeadSwap) need that layer to be a Dense named
``head``.
"""

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from unlearn_jax.models.layers import compute_dtype, upcast
from unlearn_jax.models.resnet import ResNet18, stage_groups
from unlearn_jax.models.small import MLP, SmallCNN

Params = Any
ModelState = Any

_BUILDERS = {"small_cnn": SmallCNN, "mlp": MLP, "resnet18": ResNet18}
MODEL_NAMES = tuple(_BUILDERS)


def _rngs(model: "Model", key: jax.Array, first: int = 0) -> dict[str, jax.Array]:
  """One key per RNG collection of ``model``: ``fold_in(key, first + i)`` for the i-th."""
  return {c: jax.random.fold_in(key, first + i) for i, c in enumerate(model.rng_collections)}


def _init_variables(model: "Model", key: jax.Array):
  """The module's unboxed variables; ``params`` from ``key`` itself, the RNG collections (an
  NNX Dropout needs its stream when it is built) from ``fold_in(key, 1 + i)``."""
  variables = model.module.init({"params": key, **_rngs(model, key, 1)},
                                jnp.zeros((1, *model.input_shape)), train=False)
  return nn.meta.unbox(variables)


@functools.cache
def _initializer(model: "Model"):
  return jax.jit(functools.partial(_init_variables, model))


@dataclasses.dataclass(frozen=True)
class Model:
  """A Flax module with its input shape; every attack and metric uses only this interface.

  Attributes:
    name: shown in errors and records.
    module: a Linen module, ``__call__(x, train)`` → ``(features [B, d], logits [B, C])``.
    input_shape: (H, W, C) of one image.
    num_classes: C.
    groups: top-level parameter names in forward order, grouped into the blocks that CF-k and
      EU-k count ("the last k blocks"); None: one block per top-level layer, in call order.
    rng_collections: the RNG streams a training-mode ``apply`` with a ``key`` feeds.
    normalization: the per-channel ``(mean, std)`` the module normalises its inputs with; only
      the perturbation mode "reference_compat" (it works in normalised space) reads it.
  """

  name: str
  module: nn.Module
  input_shape: tuple[int, int, int]
  num_classes: int
  groups: tuple[tuple[str, ...], ...] | None = None
  rng_collections: tuple[str, ...] = ("dropout",)
  normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None

  @classmethod
  def from_module(cls, module: nn.Module, input_shape: Sequence[int], num_classes: int, *,
                  name: str | None = None, groups: Sequence[Sequence[str]] | None = None,
                  rng_collections: Sequence[str] = ("dropout",),
                  mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> "Model":
    """Your own module as a :class:`Model`.

    Args:
      module: a Linen module whose ``__call__(x, train)`` returns ``(features [B, d], logits
        [B, C])`` for images in [0, 1] (it normalises inside); an NNX module goes through
        ``flax.nnx.bridge.to_linen(MyModule, *args)`` (its params are then an ordinary dict).
      input_shape: (H, W, C). num_classes: C.
      name: default: the module's class name.
      groups: CF-k / EU-k's blocks as top-level parameter names in forward order (needed for an
        NNX module, whose layers' call order is not visible through the bridge).
      rng_collections: RNG streams of the module (Dropout's "dropout" by default).
      mean, std: the module's input normalisation, for perturbations in "reference_compat" mode.

    Raises:
      ValueError: not a Linen module (an NNX instance), a bad ``input_shape`` or
        ``num_classes``, or only one of ``mean`` and ``std``.
    """
    if not isinstance(module, nn.Module):
      raise ValueError(f"module: a {type(module).__name__}, not a Linen module; an NNX module "
                       "joins through its class: flax.nnx.bridge.to_linen(MyModule, *args).")
    shape = tuple(int(n) for n in input_shape)
    if len(shape) != 3 or min(shape) < 1:
      raise ValueError(f"input_shape: {tuple(input_shape)}; expected (H, W, C) of positive ints.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
      raise ValueError(f"num_classes: {num_classes!r}; expected an int ≥ 2.")
    if (mean is None) != (std is None):
      raise ValueError("mean/std: give both (the module's input normalisation) or neither.")
    if name is None:
      name = getattr(getattr(module, "nnx_class", None), "__name__", type(module).__name__)
    return cls(name, module, shape, num_classes,
               None if groups is None else tuple(tuple(g) for g in groups),
               tuple(rng_collections),
               None if mean is None else (tuple(map(float, mean)), tuple(map(float, std))))

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
            train: bool = False,
            key: jax.Array | None = None) -> tuple[jax.Array, jax.Array, ModelState]:
    """``(features [B, d], logits [B, C], model_state)`` for images in [0, 1]; with
    ``train`` and a ``key``, the RNG collections (Dropout) draw from ``key``. Features and
    logits are at least float32, whatever the module computes in (mixed precision)."""
    self.check_images(images)
    variables = self._variables(params, model_state)
    rngs = _rngs(self, key) if train and key is not None else None
    if train and model_state:
      (features, logits), updates = self.module.apply(
          variables, images, train=True, mutable=["batch_stats"], rngs=rngs)
      return upcast(features), upcast(logits), updates["batch_stats"]
    features, logits = self.module.apply(variables, images, train=train, rngs=rngs)
    return upcast(features), upcast(logits), model_state

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

  def call_order(self) -> tuple[str, ...]:
    """The module's top-level submodules in the order a forward pass calls them (traced
    abstractly; an NNX module through the bridge shows none)."""
    order: list[str] = []

    def record(f, args, kwargs, context):
      path = tuple(context.module.path)
      if len(path) == 1 and path[0] not in order:
        order.append(path[0])
      return f(*args, **kwargs)

    with nn.intercept_methods(record):
      jax.eval_shape(functools.partial(_init_variables, self), jax.random.key(0))
    return tuple(order)

  def blocks(self, params: Params) -> list[list[str]]:
    """Top-level parameter groups in forward order (CF-k / EU-k's "last k blocks"): ``groups``
    if given, else one group per top-level layer with parameters, in call order.

    Raises:
      ValueError: ``groups`` that do not name every top-level parameter exactly once, or no
        ``groups`` for a module whose layers' call order cannot be traced (NNX).
    """
    names = set(params)
    if self.groups is None:
      order = [n for n in self.call_order() if n in names]
      if set(order) != names:
        raise ValueError(
            f"model '{self.name}': the forward order of its top-level parameters "
            f"{sorted(names - set(order))} cannot be traced (e.g. an NNX module); pass "
            "groups=(('first', ...), ..., ('head',)) to Model.from_module.")
      return [[n] for n in order]
    listed = [n for g in self.groups for n in g]
    if sorted(listed) != sorted(names):
      raise ValueError(f"model '{self.name}': groups {self.groups} must name each top-level "
                       f"parameter {sorted(names)} exactly once.")
    return [list(g) for g in self.groups]


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
      ``hidden`` (mlp), and for every model ``dtype``: the compute dtype, "float32" (default) or
      "bfloat16" (mixed precision: parameters, optimiser state, batch-norm statistics, features,
      logits, and so every loss and metric, stay float32).

  Raises:
    ValueError: unknown ``name`` or option, or a ``dtype`` not in
      :data:`~unlearn_jax.models.layers.PRECISIONS`.
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
  compute_dtype(options.get("dtype", "float32"))
  module = cls(num_classes=num_classes, mean=tuple(mean), std=tuple(std), **options)
  groups = stage_groups(module.stage_sizes) if name == "resnet18" else None
  return Model(name, module, tuple(input_shape), num_classes, groups,
               normalization=(tuple(mean), tuple(std)))
