"""What the originals alone say about the fidelity attacks (docs/fidelity.md): Fashion-MNIST, small
CNN, one original per recipe (the project's 3 epochs of Adam and the reference code's
``config.original_reference`` recipe), seed 0; per forgotten class (0, 3, 7) and θ_u = θ_o:

- the recovery attacks' D_f accuracy (FM, HR on probabilities, HR with 5 labels) next to θ_o's;
- the share of the unfiltered PGD set (one copy of each D_f image, key 7) that θ_o still puts in
  the forget class, per perturbation mode (class 0 only);
- the head's row norms and the mean same-class cosine of θ_o's D_f features.

No unlearning is run, so every number is a property of the original. Run:
``python benchmarks/fidelity.py [--recipes adam,reference]`` (about 12 minutes on 2 shared CPU
cores, most of it training the two originals; needs the Fashion-MNIST IDX files).
"""

import os

_COUNT_FLAG = "--xla_force_host_platform_device_count"
if _COUNT_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_COUNT_FLAG}={os.cpu_count()}"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from unlearn_jax.data.datasets import load_dataset  # noqa: E402
from unlearn_jax.data.splits import ForgetSpec, make_splits  # noqa: E402
from unlearn_jax.evaluation.outputs import accuracy, model_outputs  # noqa: E402
from unlearn_jax.evaluation.over_unlearning import SETS  # noqa: E402
from unlearn_jax.evaluation.pra_geometry import head_row_norms, same_class_cosine  # noqa: E402
from unlearn_jax.evaluation.recovery import recovery_attack  # noqa: E402
from unlearn_jax.models import make_model  # noqa: E402
from unlearn_jax.optim import Recipe  # noqa: E402
from unlearn_jax.perturbations import perturbed_set  # noqa: E402
from unlearn_jax.training.classifier import train_classifier  # noqa: E402

# The project's Fashion-MNIST original, and config.original_reference's recipe.
RECIPES = {"adam": Recipe(epochs=3, batch_size=128),
           "reference": Recipe("sgd", 0.05, 0.9, 5e-4, 5, 128, (), False, "cosine")}
CLASSES = (0, 3, 7)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recipes", default="adam,reference")
  parser.add_argument("--source-dir", default=None, help="folder of the Fashion-MNIST IDX files")
  args = parser.parse_args()
  data = load_dataset("fashion_mnist", data_dir=tempfile.mkdtemp(), source_dir=args.source_dir)
  model = make_model("small_cnn", num_classes=data.num_classes, input_shape=data.image_shape,
                     mean=data.mean, std=data.std)
  for name in args.recipes.split(","):
    state, _ = train_classifier(model, data.train, RECIPES[name], seed=0, progress=False)
    original = jax.device_get((state.params, state.model_state))
    print(f"{name}: {RECIPES[name]}\n  test accuracy {accuracy(model, *original, data.test):.2f} %")
    for c in CLASSES:
      splits = make_splits(data, ForgetSpec(classes=(c,)), seed=0)
      rec = recovery_attack(model, *original, splits, original=original)
      print(f"  class {c}, D_f accuracy: θ_o {rec['unlearned']['forget']:.1f}, FM "
            f"{rec['fm']['forget']:.1f}, HR {rec['hr']['forget']:.1f}, HR with "
            f"{rec['label_shots']} labels {rec['hr_labels']['forget']:.1f}")
      norms = head_row_norms(original[0], (c,))
      features = model_outputs(model, *original, splits.forget)[0]
      cosine = float(same_class_cosine(features, splits.forget.labels,
                                       num_classes=data.num_classes))
      print(f"  class {c}: ‖w‖ forget {norms['forget']:.3f}, ‖w‖ kept {norms['kept']:.3f}, "
            f"mean forget cosine {cosine:.3f}")
      if c == CLASSES[0]:
        for mode, (pgd, _) in SETS.items():
          config = dataclasses.replace(pgd, beta=None, beta_quantile=None)
          x = perturbed_set(model, *original, splits.forget, jax.random.key(7), config)
          kept = 100.0 * np.mean(np.argmax(model_outputs(model, *original, x)[1], -1) == x.labels)
          print(f"  class {c}, PGD {mode} (ε {config.eps:.4f}): θ_o keeps the forget class on "
                f"{kept:.1f} % of the set")


if __name__ == "__main__":
  main()
