"""Unlearning methods, one per module, each registering itself (:func:`register`) with the data
it reads and its hyper-parameters per profile ("small": tuned for the small CNN on digits;
"resnet18": published; "fashion_mnist": set for Fashion-MNIST's sizes). Every module of this
package is imported here, so a new method is one new file."""

import importlib
import pkgutil

from unlearn_jax.methods.registry import (
    METHODS,
    HParams,
    Method,
    Original,
    UnlearningData,
    get_method,
    known_profiles,
    method_data,
    register,
)

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "HParams", "Method", "Original", "UnlearningData", "get_method",
           "known_profiles", "method_data", "register"]
