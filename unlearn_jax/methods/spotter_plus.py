"""Spotter as a plug-in (its paper's "plug-and-play" use): ``spotter_plus_X`` is method X's plan
with Spotter's terms added to every block (:func:`~unlearn_jax.methods.spotter.with_spotter`).

L = L_X + w·(λ₁·KL(p̃_θo ‖ p_θ) on D_f + (1 − λ₁)·KL on Ã + λ₂·L_disp); X's optimiser, schedule,
data and epochs, Spotter's λ₁, λ₂ and perturbation, w = ``spotter_weight``. Reads X's data and
D_f. The claims page compares each X with its ``spotter_plus_X`` (docs/claims.md).

w = 0.1: Spotter's own run steps at SGD 1e-4, these methods at 1e-3 to 5e-2, and at w = 1 its
terms overwhelm them (digits, class 0: kept-class test accuracy 11.1 % for ℓ1-sparse and 87.7 %
for SalUn at w = 1, 98.5 % for both at w = 0.1, with D_f accuracy 0 in all four). Chosen on
utility alone, as the plug-in's OU@ε is what the claim tests.
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
                      "spotter_weight": 0.1},
            profiles=base.profiles, variant_of=name)
  def build(hp, original, data, seed):
    return with_spotter(base.build(hp, original, data, seed), hp, original, data, seed)


for _name in PLUGGED:
  _register(_name)
