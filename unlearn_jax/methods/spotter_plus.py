"""Spotter as a plug-in (its paper's "plug-and-play" use): ``spotter_plus_X`` is method X's plan
with Spotter's terms added to every block (:func:`~unlearn_jax.methods.spotter.with_spotter`).

L = L_X + w·(λ₁·KL(p̃_θo ‖ p_θ) on D_f + (1 − λ₁)·KL on Ã + λ₂·L_disp); X's optimiser, schedule,
data and epochs, Spotter's λ₁, λ₂ and perturbation, w = ``spotter_weight``. Reads X's data and
D_f. The claims page compares each X with its ``spotter_plus_X`` (docs/claims.md).
"""

from unlearn_jax.methods import ft, ga, l1_sparse, neggrad_plus, rl, salun  # noqa: F401
from unlearn_jax.methods.registry import get_method, register
from unlearn_jax.methods.spotter import SPOTTER_HPARAMS, with_spotter

PLUGGED = ("ft", "ga", "neggrad_plus", "rl", "salun", "l1_sparse")


def _register(name: str) -> None:
  base, spotter = get_method(name), get_method("spotter")

  @register(f"spotter_plus_{name}", reads=base.reads | {"forget"},
            description=f"{name} + Spotter's terms (masked KD on D_f and Ã, dispersion).",
            defaults={**base.defaults, **{k: spotter.defaults[k] for k in SPOTTER_HPARAMS},
                      "spotter_weight": 1.0},
            profiles=base.profiles, variant_of=name)
  def build(hp, original, data, seed):
    return with_spotter(base.build(hp, original, data, seed), hp, original, data, seed)


for _name in PLUGGED:
  _register(_name)
