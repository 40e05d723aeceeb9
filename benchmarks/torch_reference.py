"""The small CNN and the Spotter protocol written in PyTorch: the reference side of the benchmarks.

``TorchSmallCNN`` is the library's SmallCNN in PyTorch (NCHW), loaded with its Flax parameters;
``torch_spotter_loss`` is Spotter's objective as the reference code computes it. ``protocol``
does, in PyTorch, the work ``spotter_protocol.py`` times for the library — the OU sets, Spotter
(its PGD set and 10 epochs of steps with the frozen teacher run in every step, as the reference
implementation does), OU@ε and the PRA grid — written plainly (tensors indexed per batch, no
DataLoader workers), so its time is, if anything, below what the reference's own code takes.

Needs the ``bench`` extra (torch 2.13 CPU); no test or CI uses it.
"""

import copy

import jax
import numpy as np
import torch
import torch.nn.functional as F
from timing import clocks, since

from unlearn_jax.evaluation.over_unlearning import EVAL_GAUSSIAN, EVAL_PGD
from unlearn_jax.evaluation.prototypes import ALPHAS, SHOTS
from unlearn_jax.perturbations import PerturbationConfig


def torch_layout(params) -> dict[str, np.ndarray]:
  """The small CNN's Flax parameters in PyTorch's layout, keyed by PyTorch's names."""
  p = jax.tree.map(np.asarray, params)
  out = {}
  for name in ("conv1", "conv2"):
    out[f"{name}.weight"] = p[name]["kernel"].transpose(3, 2, 0, 1)  # HWIO → OIHW
    out[f"{name}.bias"] = p[name]["bias"]
  kernel = p["dense"]["kernel"]  # [(h, w, c) flattened, d]
  channels = p["conv2"]["kernel"].shape[-1]
  side = int(round((kernel.shape[0] // channels) ** 0.5))
  out["dense.weight"] = (kernel.reshape(side, side, channels, -1).transpose(3, 2, 0, 1)
                         .reshape(kernel.shape[1], -1))  # [d, (c, h, w) flattened]
  out["dense.bias"] = p["dense"]["bias"]
  out["head.weight"] = p["head"]["kernel"].T
  out["head.bias"] = p["head"]["bias"]
  return {k: np.array(v, np.float32) for k, v in out.items()}  # writable copies


class TorchSmallCNN(torch.nn.Module):
  """The library's SmallCNN in PyTorch (NCHW), built from and loaded with its Flax parameters."""

  def __init__(self, params, mean, std):
    super().__init__()
    weights = torch_layout(params)
    c1, cin = weights["conv1.weight"].shape[:2]
    c2 = weights["conv2.weight"].shape[0]
    hidden, flat = weights["dense.weight"].shape
    self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
    self.conv1 = torch.nn.Conv2d(cin, c1, 3, padding=1)
    self.conv2 = torch.nn.Conv2d(c1, c2, 3, padding=1)
    self.dense = torch.nn.Linear(flat, hidden)
    self.head = torch.nn.Linear(hidden, weights["head.weight"].shape[0])
    self.load_state_dict({"mean": self.mean, "std": self.std,
                          **{k: torch.from_numpy(v) for k, v in weights.items()}})

  def forward(self, x):
    x = (x - self.mean) / self.std
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    features = F.relu(self.dense(x.flatten(1)))
    return features, self.head(features)


def torch_ce_loss(model, batch):
  return F.cross_entropy(model(batch["x"])[1], batch["y"])


def _masked_softmax(logits, forget_mask):
  return F.softmax(logits.masked_fill(forget_mask, float("-inf")), dim=-1)


def torch_spotter_targets(teacher, batch):
  """The frozen teacher's masked softmax p̃_o on the forget and the perturbed batch."""
  with torch.no_grad():
    return (_masked_softmax(teacher(batch["xf"])[1], batch["forget_mask"]),
            _masked_softmax(teacher(batch["xp"])[1], batch["forget_mask"]))


def torch_spotter_loss(model, targets, batch, weights):
  """0.7·KL(p̃_o ‖ p) on forget + 0.3·KL on perturbed + 1.0·dispersion on forget features;
  ``targets`` = (p̃_o on forget, p̃_o on perturbed)."""
  target_f, target_p = targets
  features, logits_f = model(batch["xf"])
  _, logits_p = model(batch["xp"])
  kd_f = F.kl_div(F.log_softmax(logits_f, -1), target_f, reduction="batchmean")
  kd_p = F.kl_div(F.log_softmax(logits_p, -1), target_p, reduction="batchmean")
  z = F.normalize(features, dim=-1)
  y = batch["yf"]
  same = ((y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool)).float()
  dispersion = ((z @ z.T) * same).sum() / same.sum().clamp(min=1.0)
  return weights["mkd"] * kd_f + weights["mkd_near"] * kd_p + weights["dispersion"] * dispersion


# The Spotter protocol in PyTorch (spotter_protocol.py's parts, same sizes and settings).

EVAL_BATCH = 256  # forward passes without gradients (PyTorch is fastest at 128–256 here)
PGD_BATCH = 128  # the reference's loader batch; PyTorch's fastest here (64: 1.2×, 256: 1.6× slower)
PRA_DRAWS = 5


def nchw(images: np.ndarray) -> torch.Tensor:
  """NHWC float images → an NCHW tensor."""
  return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _margin(logits, labels):
  """m_y = s_y − max_{k≠y} s_k."""
  others = logits.scatter(1, labels[:, None], float("-inf"))
  return logits.gather(1, labels[:, None])[:, 0] - others.max(1).values


def _forward(net, x, batch=EVAL_BATCH):
  """(features, logits) of ``net`` on ``x``, in batches, without gradients."""
  with torch.no_grad():
    outs = [net(x[i:i + batch]) for i in range(0, len(x), batch)]
  return torch.cat([f for f, _ in outs]), torch.cat([s for _, s in outs])


def perturbed(net, x, y, generator, config: PerturbationConfig):
  """(x̃, |m_y(x̃)| under ``net``) as the library's pixel-space ("targeted_boundary") modes: PGD
  toward the runner-up class (``num_steps`` signed steps of ``step_size`` in the ε L∞ ball from a
  uniform start, clipped to [0, 1]), or x + N(0, σ²) clipped."""
  if config.mode != "targeted_boundary":
    raise ValueError(f"perturbation.mode: {config.mode!r}; only targeted_boundary is written here.")
  eps, step = config.eps, config.step_size
  images, margins = [], []
  for i in range(0, len(x), PGD_BATCH):
    x0, labels = x[i:i + PGD_BATCH], y[i:i + PGD_BATCH]
    if config.kind == "gaussian":
      z = (x0 + config.sigma * torch.randn(x0.shape, generator=generator)).clamp(0.0, 1.0)
    else:
      with torch.no_grad():
        top2 = net(x0)[1].topk(2, dim=1).indices
      target = torch.where(top2[:, 0] == labels, top2[:, 1], top2[:, 0])

      def project(z, x0=x0):
        return torch.minimum(torch.maximum(z, x0 - eps), x0 + eps).clamp(0.0, 1.0)

      z = project(x0 + eps * (2 * torch.rand(x0.shape, generator=generator) - 1))
      for _ in range(config.num_steps):
        z.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(net(z)[1], target, reduction="sum"), z)
        z = project(z.detach() - step * grad.sign())
    with torch.no_grad():
      margins.append(_margin(net(z)[1], labels).abs())
    images.append(z.detach())
  return torch.cat(images), torch.cat(margins)


def ou_set(net, x, y, generator, config: PerturbationConfig):
  """The OU set Ã: the perturbed copies whose |margin| is at most the ``beta_quantile``-th
  quantile (the β filter)."""
  images, margins = perturbed(net, x, y, generator, config)
  keep = margins <= torch.quantile(margins, config.beta_quantile)
  return images[keep], y[keep]


def spotter(teacher, x, y, near, forget_mask, generator, config):
  """The student after ``config.epochs`` over D_f zipped with Ã (both reshuffled every epoch) with
  the config's SGD, batch size and λ₁, λ₂; the frozen teacher's masked targets are computed in
  every step, as the reference does."""
  student = copy.deepcopy(teacher).requires_grad_(True).train()
  opt = torch.optim.SGD(student.parameters(), lr=config.learning_rate, momentum=config.momentum,
                        weight_decay=config.weight_decay)
  weights = {"mkd": config.lambda1, "mkd_near": 1.0 - config.lambda1,
             "dispersion": config.lambda2}
  batch = config.batch_size
  steps = -(-len(x) // batch)
  for _ in range(config.epochs):
    order_f, order_p = torch.randperm(len(x), generator=generator), torch.randperm(
        len(near), generator=generator)
    for b in range(steps):
      i, j = order_f[b * batch:(b + 1) * batch], order_p[b * batch:(b + 1) * batch]
      data = {"xf": x[i], "yf": y[i], "xp": near[j], "forget_mask": forget_mask}
      opt.zero_grad(set_to_none=True)
      torch_spotter_loss(student, torch_spotter_targets(teacher, data), data, weights).backward()
      opt.step()
  return student.eval()


def ou_at_eps(teacher, student, x, forget_mask) -> float:
  """Mean JS(p̃_teacher, p_student) over ``x`` (natural log, 1e-12 inside log m)."""
  p = _masked_softmax(_forward(teacher, x)[1], forget_mask)
  q = F.softmax(_forward(student, x)[1], dim=-1)
  log_m = torch.log(0.5 * (p + q) + 1e-12)
  js = 0.5 * ((torch.xlogy(p, p) - p * log_m).sum(1) + (torch.xlogy(q, q) - q * log_m).sum(1))
  return float(js.mean())


def pra(student, sets, forget_class: int, generator) -> dict | None:
  """The PRA grid (K × draws × α × rule, shots from D_f) on the student's features of
  ``sets`` = {"forget", "test_forget", "test_retain"} → (x, y): the strongest setting's mean
  accuracies, among those that drop Acc(D_t^r) by at most 1 point (None if none does)."""
  feats = {name: (_forward(student, x), y) for name, (x, y) in sets.items()}
  head_w, head_b = student.head.weight.detach(), student.head.bias.detach()
  base = {name: float((logits.argmax(1) == y).float().mean()) * 100
          for name, ((_, logits), y) in feats.items()}
  alphas = torch.tensor(ALPHAS)[:, None]
  settings = []
  for k in SHOTS:  # the same draws for both rules, as the library's grid
    draws = [torch.randperm(len(sets["forget"][1]), generator=generator)[:k]
             for _ in range(PRA_DRAWS)]
    for mode in ("cosine", "l2"):
      acc = {name: [] for name in feats}
      for shots in draws:
        proto = F.normalize(feats["forget"][0][0][shots].mean(0), dim=0)
        target_w, target_b = (proto, 0.0) if mode == "cosine" else (2 * proto, -proto @ proto)
        for name, ((z, logits), y) in feats.items():
          column = (alphas * (z @ target_w + target_b)
                    + (1 - alphas) * (z @ head_w[forget_class] + head_b[forget_class]))
          edited = logits.expand(len(ALPHAS), *logits.shape).clone()
          edited[:, :, forget_class] = column
          acc[name].append((edited.argmax(2) == y).float().mean(1) * 100)
      means = {name: torch.stack(a).mean(0) for name, a in acc.items()}
      settings += [{name: float(m[a]) for name, m in means.items()}
                   for a in range(len(ALPHAS))]
  allowed = [s for s in settings if base["test_retain"] - s["test_retain"] <= 1.0]
  return max(allowed, key=lambda s: s["forget"]) if allowed else None


def protocol(teacher_params, mean, std, splits, forget_class: int, num_classes: int, seed: int,
             config) -> tuple[dict, dict]:
  """({part: (wall s, CPU s)}, results) of the Spotter protocol in PyTorch on ``splits``
  (D_f, D_t^f, D_t^r as numpy arrays), teacher θ_o loaded from its Flax parameters, Spotter's
  settings from ``config`` (the method's profile).

  Parts as in spotter_protocol.py: the OU sets (PGD and Gaussian, β filter at the median
  |margin|), Spotter's own PGD set of D_f, Spotter's 10 epochs (470 steps; teacher forward in
  every step), OU@ε on both sets, the PRA grid."""
  generator = torch.Generator().manual_seed(seed)
  teacher = TorchSmallCNN(teacher_params, mean, std).eval().requires_grad_(False)
  forget_mask = torch.zeros(num_classes, dtype=torch.bool)
  forget_mask[forget_class] = True
  times = {}
  start = clocks()
  x, y = nchw(splits.forget.images), torch.from_numpy(splits.forget.labels.astype(np.int64))
  sets = {ou.kind: ou_set(teacher, x, y, generator, ou) for ou in (EVAL_PGD, EVAL_GAUSSIAN)}
  times["OU sets (PGD + Gaussian)"] = since(start)
  start = clocks()
  near, _ = perturbed(teacher, x, y, generator,
                      PerturbationConfig(**config.perturbation))
  times["Spotter: its PGD set"] = since(start)
  start = clocks()
  student = spotter(teacher, x, y, near, forget_mask, generator, config)
  times[f"Spotter: {config.epochs} epochs of steps"] = since(start)
  start = clocks()
  ou = {f"OU/{kind}": ou_at_eps(teacher, student, images, forget_mask)
        for kind, (images, _) in sets.items()}
  times["OU@ε (PGD, Gaussian)"] = since(start)
  start = clocks()
  eval_sets = {name: (nchw(d.images), torch.from_numpy(d.labels.astype(np.int64)))
               for name, d in (("forget", splits.forget), ("test_forget", splits.test_forget),
                               ("test_retain", splits.test_retain))}
  strongest = pra(student, eval_sets, forget_class, generator)
  times["PRA grid"] = since(start)
  results = {"Acc(D_f)": 100 * float((_forward(student, x)[1].argmax(1) == y).float().mean()),
             **ou, "PRA strongest Acc(D_f)": None if strongest is None else strongest["forget"]}
  return times, results
