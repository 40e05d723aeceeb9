"""Unlearning methods: a registry by name (:func:`get_method`), each declaring its data access,
hyper-parameters per profile ("resnet18": published; "small": tuned for the small CNN on
digits / Fashion-MNIST), and a plan builder."""

from unlearn_jax.methods import boundary, distill, finetune, opc, spotter, ssd, unsir  # noqa: F401
from unlearn_jax.methods.base import (
    METHODS,
    Method,
    Original,
    Plan,
    UnlearningData,
    get_method,
    register,
)

__all__ = ["METHODS", "Method", "Original", "Plan", "UnlearningData", "get_method", "register"]
