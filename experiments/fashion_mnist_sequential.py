"""Fashion-MNIST (full 70,000), small CNN, five sequential deletion requests
(unlearn_jax/sequence.py, docs/math.md §6.9): classes 0, 3, 7 (the class config's three), then 1
and 8, each applied to the model the previous request left; after each, every method against
Retrain on the cumulative forget set; 3 trials (seeds 0, 1, 2; the same requests); mean ± std.
The class config's data, model, original and profile.

  unlearn-jax run experiments/fashion_mnist_sequential.py
  unlearn-jax run experiments/fashion_mnist_sequential.py:random
  unlearn-jax run experiments/fashion_mnist_sequential.py:brief

``random``: five random batches of 2 % of the training set (1,200 images each, uniformly drawn,
disjoint), so that after the fifth the cumulative forget set is 10 % as in
fashion_mnist_random10.py (not stratified), with that config's methods and overrides.

Five evaluations per method: gradient inversion, relearning on D_r and unlearning inversion are
off (ToW and the weight-space predictors stay on; `unlearn-jax evaluate RUN/trial0/req5
--config.evaluation.relearn_retain.enabled=True` adds one to a request). Each request costs
about as much as one trial of fashion_mnist_class.py (about an hour on a 2-core CPU), so a trial
takes about five hours; --config.trials='(0,)' runs one.

``brief``: the class requests with the methods a reader compares across them (Retrain, FT, GA,
NegGrad+, RL, SalUn, SCRUB, Spotter, OPC and spotter_align) and what the request tables and the
two blind spots need (UA, RA, TA, MIA, the gap, ToW, OU@ε, PRA); recovery, representation and
weight-space measurements are off. About half a trial of fashion_mnist_class.py per request.
"""

import fashion_mnist_class
import fashion_mnist_random10


def get_config(arg: str | None = None):
  c = fashion_mnist_class.get_config()
  c.name = "fashion_mnist_sequential"
  c.output_dir = "runs/fashion_mnist_sequential"
  c.trial_classes = ()
  c.sequence.classes = ((0,), (3,), (7,), (1,), (8,))
  for name in ("inversion", "relearn_retain", "uia"):
    c.evaluation[name].enabled = False
  if arg == "random":
    c.name = "fashion_mnist_sequential_random"
    c.output_dir = "runs/fashion_mnist_sequential_random"
    c.sequence.classes = ()
    c.sequence.batches = 5
    c.sequence.batch_fraction = 0.02
    random10 = fashion_mnist_random10.get_config()
    c.methods, c.hparams = random10.methods, random10.hparams
    c.evaluation.relearn.enabled = False
  elif arg == "brief":
    c.name = "fashion_mnist_sequential_brief"
    c.output_dir = "runs/fashion_mnist_sequential_brief"
    c.methods = ("retrain", "ft", "ga", "neggrad_plus", "rl", "salun", "scrub", "spotter", "opc",
                 "spotter_align")
    for name in ("recovery", "relearn", "weight_space"):
      c.evaluation[name].enabled = False
    c.evaluation.representation = False
  elif arg is not None:
    raise ValueError(f"experiments/fashion_mnist_sequential.py: unknown variant {arg!r}; "
                     "allowed: random, brief.")
  return c
