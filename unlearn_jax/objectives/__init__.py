"""Pure, jit-able objectives: per-example losses, term factories, and their composition."""

from unlearn_jax.objectives.compose import (
    Context,
    Objective,
    Outputs,
    Term,
    check_weights,
    forget_mask,
    make_frozen,
    make_objective,
    with_augmentation,
)

__all__ = ["Context", "Objective", "Outputs", "Term", "check_weights", "forget_mask",
           "make_frozen", "make_objective", "with_augmentation"]
