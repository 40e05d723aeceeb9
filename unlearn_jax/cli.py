"""The ``unlearn-jax`` command.

  unlearn-jax run CONFIG [--config.key=value ...]      the whole protocol of an experiment config
  unlearn-jax train-original CONFIG [overrides]       train (or load from cache) the original model
  unlearn-jax train-retrain CONFIG [overrides]        train (or load) the Retrain oracles
  unlearn-jax report RUN_DIR                          regenerate table and plots from results.json
  unlearn-jax methods                                 list the methods and their data access

CONFIG is a path to a ``get_config(arg=None)`` file (``path.py:arg`` passes ``arg``) or a name
under ``experiments/``. By default JAX sees one CPU device per core, so the batch is split over
all cores; set XLA_FLAGS yourself (e.g. ``--xla_force_host_platform_device_count=1``) to change it.
"""

import argparse
import json
import os
import sys


def _default_cpu_devices() -> None:
  """Before JAX starts: one CPU device per core (design.md: the fast CPU default)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="unlearn-jax", description="Machine unlearning in JAX: methods, attacks, metrics.",
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  for name, help_text in (
      ("run", "run an experiment config end to end and write results.json, results.md, plots"),
      ("train-original", "train (or load from the cache) the original model of a config"),
      ("train-retrain", "train (or load from the cache) the Retrain oracles of a config")):
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("config", help="experiment config: path[.py][:arg] or a name in experiments/")
    p.add_argument("overrides", nargs="*", metavar="--config.KEY=VALUE",
                   help="override config fields, e.g. --config.seed=1 "
                        "--config.hparams.spotter.epochs=5")
  p = sub.add_parser("report", help="regenerate the table and plots of a finished run")
  p.add_argument("run_dir", help="a run's output directory (holding results.json)")
  sub.add_parser("methods", help="list the registered methods, their data and description")
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  args, unknown = _parser().parse_known_args(argv)
  if args.command in ("run", "train-original", "train-retrain"):
    args.overrides = list(args.overrides) + unknown
  elif unknown:
    _parser().error(f"unrecognized arguments: {' '.join(unknown)}")
  _default_cpu_devices()
  from unlearn_jax import config as config_lib
  from unlearn_jax import report, runner

  try:
    if args.command == "methods":
      from unlearn_jax.methods import METHODS
      for name, m in sorted(METHODS.items()):
        print(f"{name:20s} reads {'+'.join(sorted(m.reads)):15s} {m.description}")
      return 0
    if args.command == "report":
      results = report.report_from_dir(args.run_dir)
      print(open(os.path.join(args.run_dir, "results.md")).read())
      return 0 if results else 1
    config = config_lib.load_config(args.config, args.overrides)
    if args.command == "run":
      results = runner.run_experiment(config)
      print(open(os.path.join(config.output_dir, "results.md")).read())
      print(f"wrote {os.path.abspath(config.output_dir)}/results.json, results.md and plots")
      return 0 if results else 1
    exp = runner.Experiment(config)
    if args.command == "train-original":
      original, seconds = exp.original()
      from unlearn_jax.evaluation.outputs import accuracy
      acc = accuracy(exp.model, original.params, original.model_state, exp.dataset.test)
      print(json.dumps({"model": "original", "test_accuracy": acc, "train_seconds": seconds}))
    else:
      retrains, seconds = exp.retrains()
      from unlearn_jax.evaluation.outputs import accuracy
      accs = [accuracy(exp.model, p, s, exp.splits.test_retain) for p, s in retrains]
      print(json.dumps({"model": "retrain", "seeds": list(config.retrain_seeds),
                        "test_retain_accuracy": accs, "train_seconds_per_model": seconds}))
    return 0
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f"unlearn-jax: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
