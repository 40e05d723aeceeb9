"""Digits, U-LiRA with the population U-MIAs P1 and P2 and LiRA (docs/math.md §7.3–§7.5): M = 256
MLPs on balanced halves of the 1,437 training digits; each unlearns its own half of a target set
T with every method; per method U-LiRA (per-example Gaussians), P2 (one threshold on the same
samples) and P1 (loss attack), with per-example vulnerability.

  unlearn-jax run experiments/digits_ulira.py          # T = 200 random pool examples
  unlearn-jax run experiments/digits_ulira.py:class    # T = class 0's pool examples
  unlearn-jax run experiments/digits_ulira.py:ci       # M = 64, fixed variance, 5 epochs

The random variant leaves Spotter out (class unlearning only); the class variant runs it. GA and
NegGrad+ run their fixed epochs (an early-stop rule cannot be vmapped).
"""

from unlearn_jax.config import population_defaults

SPOTTER = {"spotter": "class unlearning only; T is a random set (see the :class variant)"}


def get_config(arg: str | None = None):
  c = population_defaults()
  c.name = "digits_ulira"
  c.protocol = "ulira"
  c.output_dir = "runs/digits_ulira"
  c.data.name = "digits"
  c.model.name = "mlp"
  c.population.models = 256
  c.target.size = 200
  c.methods = ("retrain", "ft", "ga", "neggrad_plus", "salun", "scrub", "opc")
  c.excluded = SPOTTER
  if arg == "class":
    c.name = "digits_ulira_class"
    c.output_dir = "runs/digits_ulira_class"
    c.target.size = 0
    c.target.classes = (0,)
    c.methods = ("retrain", "ft", "ga", "neggrad_plus", "salun", "scrub", "spotter", "opc",
                 "spotter_align")
    c.excluded = {}
  elif arg == "ci":
    c.name = "digits_ulira_ci"
    c.output_dir = "runs/digits_ulira_ci"
    c.population.models = 64
    c.attack.variance = "fixed"
    c.original.epochs = 5
  elif arg is not None:
    raise ValueError(f"experiments/digits_ulira.py: unknown variant {arg!r}; allowed: class, ci.")
  return c
