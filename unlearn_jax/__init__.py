"""unlearn_jax: machine unlearning for JAX.

``unlearn_jax.load_run(run_dir)`` (:func:`unlearn_jax.runs.load_run`) gives back every model a
finished ``unlearn-jax run`` kept; the pieces live in their modules (docs/design.md, "Layers").
"""

__version__ = "0.1.0"


def __getattr__(name: str):
  if name == "load_run":  # imported on first use: ``import unlearn_jax`` stays light
    from unlearn_jax.runs import load_run
    return load_run
  raise AttributeError(f"module 'unlearn_jax' has no attribute {name!r}")
