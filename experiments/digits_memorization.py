"""Digits, every method on forget sets of low, medium and high memorization (RUM, Zhao et al.,
NeurIPS 2024; docs/math.md §7.8): mem(i) from M = 256 MLPs on balanced halves of the 1,437
training digits; three disjoint forget sets of 30 examples (the lowest, closest to 0.5 and highest
mem; most digits have mem = 0, about 110 more than 0.05); K = 64 originals on all of them, each
unlearning every stratum with every method, against 2K = 128 Retrain models per stratum (a
reference half and a noise-floor half): forget accuracy, its gap to Retrain, RA, TA and KLOM.

  unlearn-jax run experiments/digits_memorization.py
  unlearn-jax run experiments/digits_memorization.py:ci   # M = 16, K = 8, 3 epochs

Spotter is left out (class unlearning only; the strata are sets of examples). GA and NegGrad+ run
their fixed epochs (an early-stop rule cannot be vmapped).
"""

from unlearn_jax.config import population_defaults


def get_config(arg: str | None = None):
  c = population_defaults()
  c.name = "digits_memorization"
  c.protocol = "memorization"
  c.output_dir = "runs/digits_memorization"
  c.data.name = "digits"
  c.model.name = "mlp"
  c.target.size = 30
  c.memorization.models = 256
  c.population.models = 64
  c.methods = ("retrain", "ft", "ga", "neggrad_plus", "salun", "scrub", "opc")
  c.excluded = {"spotter": "class unlearning only; the strata are sets of examples"}
  if arg == "ci":
    c.name = "digits_memorization_ci"
    c.output_dir = "runs/digits_memorization_ci"
    c.memorization.models = 16
    c.memorization.min_models = 8
    c.population.models = 8
    c.original.epochs = 3
  elif arg is not None:
    raise ValueError(f"experiments/digits_memorization.py: unknown variant {arg!r}; allowed: ci.")
  return c
