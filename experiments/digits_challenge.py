"""Digits, the NeurIPS 2023 Machine Unlearning Challenge's forgetting score (docs/math.md §7.2):
an MLP original on the 1,437 training digits, 200 random examples forgotten, M = 512 unlearned
models per method (from that original, own seeds) against M = 512 retrained ones (own seeds);
forgetting quality F, the final score and ε per example for each method.

  unlearn-jax run experiments/digits_challenge.py
  unlearn-jax run experiments/digits_challenge.py:quick   # M = 64 (about a minute)

Spotter is left out: it is class unlearning only (its masked teacher removes whole classes) and
this score is defined on a random forget set; digits_ulira.py:class runs it. GA and NegGrad+ run
their fixed epochs (their early-stop rule cannot be vmapped, and a 5% forget-accuracy target is a
class-forgetting goal). The "retrain" row is a second, independent Retrain population (F near 1).
"""

from unlearn_jax.config import population_defaults


def get_config(arg: str | None = None):
  c = population_defaults()
  c.name = "digits_challenge"
  c.protocol = "challenge"
  c.output_dir = "runs/digits_challenge"
  c.data.name = "digits"
  c.model.name = "mlp"
  c.target.size = 200
  c.population.models = 512
  c.methods = ("retrain", "ft", "ga", "neggrad_plus", "salun", "scrub", "opc")
  c.excluded = {"spotter": "class unlearning only; the challenge forgets a random set"}
  if arg == "quick":
    c.name = "digits_challenge_quick"
    c.output_dir = "runs/digits_challenge_quick"
    c.population.models = 64
  elif arg is not None:
    raise ValueError(f"experiments/digits_challenge.py: unknown variant {arg!r}; allowed: quick.")
  return c
