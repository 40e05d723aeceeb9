"""Hyper-parameter profiles derived from another profile by a few overrides.

``fashion_mnist``: the ``small`` (digits-tuned) values with epochs and batch sizes set for
Fashion-MNIST's 54,000 retained and 6,000 forgotten images per class (one Fashion-MNIST epoch
over D_r is about 40 digits epochs), and learning rates lowered where the unbounded ascent of
SCRUB's max step diverged. Checked on Fashion-MNIST classes 0 and 3 (docs/design.md,
"Hyper-parameter profiles").
"""

DERIVED = {
    "fashion_mnist": ("small", {
        "retrain": {"epochs": 3, "batch_size": 128},
        "ft": {"epochs": 2, "batch_size": 128},
        "ga": {"epochs": 5, "batch_size": 32},
        "neggrad_plus": {"epochs": 2, "batch_size": 128},
        "rl": {"epochs": 2, "batch_size": 128},
        "boundary_shrink": {"epochs": 2},
        "boundary_expanding": {"learning_rate": 3e-4, "epochs": 5},
        "l1_sparse": {"epochs": 3, "batch_size": 128},
        "salun": {"epochs": 2, "batch_size": 128},
        "scrub": {"learning_rate": 5e-4, "epochs": 3, "msteps": 2, "batch_size": 128,
                  "stop_forget_accuracy": 5.0},
        "bad_teacher": {"learning_rate": 1e-3, "epochs": 5, "batch_size": 128, "temperature": 1.0},
        "unsir": {"noise_copies": 80, "retain_per_class": 500, "impair_epochs": 1,
                  "repair_epochs": 1, "batch_size": 128},
        "ssd": {"alpha": 5.0, "batch_size": 128},
        "cf_k": {"learning_rate": 0.05, "weight_decay": 0.0, "epochs": 2, "batch_size": 128},
        "eu_k": {"epochs": 3, "batch_size": 128},
        "opc": {"epochs": 2, "batch_size": 128},
    }),
}
