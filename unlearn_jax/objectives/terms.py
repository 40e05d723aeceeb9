"""Term factories: each returns a :class:`Term` that a method puts in its objective.

Every term is a masked mean over the real (unpadded) examples of its stream, except dispersion
(a mean over same-label pairs) and l1 (over parameters).
"""

import jax

from unlearn_jax.objectives import losses
from unlearn_jax.objectives.compose import Context, Term


def _mean(ctx: Context, values: jax.Array) -> jax.Array:
  return losses.masked_mean(values, where=ctx.data["mask"])


def cross_entropy(stream: str = "retain") -> Term:
  """E_{(x,y)∈stream} CE(h_θ(x), y)."""
  return Term(lambda c: _mean(c, losses.cross_entropy(c.out.logits, c.data["label"])), stream)


def negated_cross_entropy(stream: str = "forget") -> Term:
  """−E_{(x,y)∈stream} CE(h_θ(x), y): gradient ascent on the stream (GA, NegGrad+)."""
  return Term(lambda c: -_mean(c, losses.cross_entropy(c.out.logits, c.data["label"])), stream)


def random_label_cross_entropy(stream: str = "forget") -> Term:
  """E CE(h_θ(x), ỹ), ỹ ~ U{0..C−1} drawn afresh each step (RL; ỹ may equal y, as in SalUn)."""

  def fn(c: Context) -> jax.Array:
    labels = jax.random.randint(c.key, c.data["label"].shape, 0, c.out.logits.shape[-1])
    return _mean(c, losses.cross_entropy(c.out.logits, labels))

  return Term(fn, stream)


def distillation(stream: str, *, teacher: str = "original", temperature: float = 1.0,
                 masked: bool = False) -> Term:
  """E T²·KL(softmax(t/T) ‖ softmax(s/T)); ``masked`` uses p̃ (forget classes removed)."""

  def fn(c: Context) -> jax.Array:
    mask = c.frozen["forget_mask"] if masked else None
    return _mean(c, losses.distillation(c.out.logits, c.teachers[teacher].logits,
                                        temperature=temperature, forget_mask=mask))

  return Term(fn, stream, (teacher,), ("forget_mask",) if masked else ())


def negated_distillation(stream: str = "forget", *, teacher: str = "original",
                         temperature: float = 1.0) -> Term:
  """−E T²·KL(teacher ‖ student): SCRUB's max step, moving away from the teacher."""
  base = distillation(stream, teacher=teacher, temperature=temperature)
  return Term(lambda c: -base.fn(c), stream, (teacher,))


def dispersion(stream: str = "forget") -> Term:
  """Spotter's intra-class dispersion of penultimate features (see losses.dispersion)."""
  return Term(lambda c: losses.dispersion(c.out.features, c.data["label"], where=c.data["mask"]),
              stream)


def contraction(stream: str = "forget", *, representation: str = "logits",
                squared: bool = False) -> Term:
  """OPC: E_{x∈D_f} ‖r_θ(x)‖₂ (or squared), r ∈ {logits, features}."""
  if representation not in ("logits", "features"):
    raise ValueError(f"contraction.representation: {representation!r}; allowed: logits, features.")

  def fn(c: Context) -> jax.Array:
    r = c.out.logits if representation == "logits" else c.out.features
    return _mean(c, losses.contraction(r, squared=squared))

  return Term(fn, stream)


def feature_target(stream: str = "forget", *, target: str = "target") -> Term:
  """E ‖f_θ(x) − t(x)‖² / ‖t(x)‖²: penultimate features toward per-example targets t, read from
  the stream's ``target`` extra (a :class:`~unlearn_jax.training.plan.Data` extra)."""
  return Term(lambda c: _mean(c, losses.relative_squared_error(c.out.features,
                                                               c.data[target])), stream)


def l1_penalty(*, decay: str = "linear") -> Term:
  """γ_t‖θ‖₁ with γ_t = (1 − t/T) (linear decay; the term's weight is γ₀) or constant."""
  if decay not in ("linear", "constant"):
    raise ValueError(f"l1_penalty.decay: {decay!r}; allowed: linear, constant.")

  def fn(c: Context) -> jax.Array:
    scale = 1.0 - c.progress if decay == "linear" else 1.0
    return scale * losses.l1_norm(c.params)

  return Term(fn)


def blended_teacher_distillation(stream: str = "mixed", *, good: str = "original",
                                 bad: str = "bad", temperature: float = 1.0) -> Term:
  """Bad Teacher: E KL(u·softmax(t_bad/T) + (1−u)·softmax(t_good/T) ‖ softmax(s/T)).

  u = 1 for forget examples, read from the stream's ``is_forget`` field.
  """

  def fn(c: Context) -> jax.Array:
    good_p = jax.nn.softmax(c.teachers[good].logits / temperature)
    bad_p = jax.nn.softmax(c.teachers[bad].logits / temperature)
    u = c.data["is_forget"].astype(good_p.dtype)[:, None]
    log_q = jax.nn.log_softmax(c.out.logits / temperature)
    return _mean(c, losses.kl_divergence(log_q, u * bad_p + (1 - u) * good_p))

  return Term(fn, stream, (good, bad))
