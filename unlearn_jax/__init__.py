"""unlearn_jax: machine unlearning for JAX."""

__version__ = "0.1.0"
