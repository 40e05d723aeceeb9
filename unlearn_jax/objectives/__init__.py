"""Pure, jit-able objectives: per-example losses, term factories, and their composition."""

from unlearn_jax.objectives.compose import (
    Context,
    Objective,
    Outputs,
    Term,
    make_objective,
    with_augmentation,
)

__all__ = ["Context", "Objective", "Outputs", "Term", "make_objective", "with_augmentation"]
