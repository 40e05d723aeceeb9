"""The ``unlearn-jax`` command.

  unlearn-jax run CONFIG [--config.key=value ...]      the whole protocol of an experiment config
  unlearn-jax train-original CONFIG [overrides]       train (or load from cache) the original model
  unlearn-jax train-retrain CONFIG [overrides]        train (or load) the Retrain oracles
  unlearn-jax evaluate RUN_DIR [--config.evaluation.KEY=VALUE ...]
                                                      evaluate the models a run kept (no training)
  unlearn-jax report RUN_DIR                          regenerate table and plots from results.json
  unlearn-jax record RUN_DIR                          copy the run's summary.json to results/
  unlearn-jax report --docs                           docs/results.md, claims.md, hparams.md from
                                                      results/*.json (--check: compare only)
  unlearn-jax methods                                 list the methods and their data access

CONFIG is a path to a ``get_config(arg=None)`` file (``path.py:arg`` passes ``arg``) or a name
under ``experiments/``. By default JAX sees one CPU device per core, so the batch is split over
all cores, and GPU kernels are deterministic (reruns are bit-identical); set XLA_FLAGS yourself
(e.g. ``--xla_force_host_platform_device_count=1``, ``--xla_gpu_deterministic_ops=false``) to
change either. ``run`` ends by reporting the process's peak host memory.

Messages (what was written, warnings, errors) go through the ``unlearn_jax`` logger to stderr;
results (tables, JSON) to stdout; progress bars are drawn because the configs ask for them
(``config.progress``; library functions draw none unless given ``progress=True``).

Multi-process (docs/multihost.md): start the same command once per host with ``--distributed``
(JAX detects Cloud TPU, SLURM, Open MPI) or with ``--coordinator HOST:PORT --num-processes N
--process-id I`` (or the UNLEARN_JAX_* variables); every process must get the same config.
"""

import argparse
import json
import logging
import os
import pathlib
import resource
import shlex
import sys

LOG = logging.getLogger("unlearn_jax")


class _Messages(logging.Handler):
  """Writes ``unlearn-jax: message`` (warnings and errors: ``unlearn-jax: warning: message``) to
  the current ``sys.stderr``."""

  def emit(self, record: logging.LogRecord) -> None:
    level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
    print(f"unlearn-jax: {level}{record.getMessage()}", file=sys.stderr)


def _show_messages() -> None:
  """The ``unlearn_jax`` logger's INFO and above on stderr (one handler per process)."""
  if not any(isinstance(h, _Messages) for h in LOG.handlers):
    LOG.addHandler(_Messages())
  LOG.setLevel(logging.INFO)
  LOG.propagate = False


def peak_host_memory_mib() -> float:
  """The process's peak resident memory so far (``ru_maxrss``), in MiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _default_xla_flags() -> None:
  """Before JAX starts: one CPU device per core (design.md: the fast CPU default), and
  deterministic GPU kernels, without which reruns and resumed runs differ in the last bits on a
  GPU (measured on an H200: docs/performance.md). A flag already in XLA_FLAGS is kept."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    flags = f"{flags} --xla_force_host_platform_device_count={count}"
  if "xla_gpu_deterministic_ops" not in flags:
    flags = f"{flags} --xla_gpu_deterministic_ops=true"
  os.environ["XLA_FLAGS"] = flags.strip()


def _distributed_flags(p: argparse.ArgumentParser) -> None:
  g = p.add_argument_group("multi-process run (each flag defaults to its environment variable)")
  g.add_argument("--distributed", action="store_true",
                 help="join a multi-process run; with no other flag JAX detects the cluster")
  g.add_argument("--coordinator", metavar="HOST:PORT",
                 help="address of process 0 (UNLEARN_JAX_COORDINATOR)")
  g.add_argument("--num-processes", type=int, metavar="N",
                 help="processes in the run (UNLEARN_JAX_NUM_PROCESSES)")
  g.add_argument("--process-id", type=int, metavar="I",
                 help="this process, 0..N-1 (UNLEARN_JAX_PROCESS_ID)")
  g.add_argument("--init-timeout", type=float, metavar="SECONDS",
                 help="wait for the coordinator and the other processes (UNLEARN_JAX_INIT_TIMEOUT,"
                      " default 300)")


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
    p.add_argument("overrides", nargs="*", default=[], metavar="--config.KEY=VALUE",
                   help="override config fields, e.g. --config.seed=1 "
                        "--config.hparams.spotter.epochs=5")
    _distributed_flags(p)
  p = sub.add_parser("evaluate", help="evaluate the models a run kept, training nothing, and "
                     "rewrite its results, table and plots")
  p.add_argument("run_dir", help="a run's output directory (holding config.json and models/)")
  p.add_argument("overrides", nargs="*", default=[], metavar="--config.evaluation.KEY=VALUE",
                 help="change metric settings, e.g. --config.evaluation.pra.enabled=True")
  p = sub.add_parser("report", help="regenerate the table and plots of a finished run, or the "
                     "docs from the recorded summaries")
  p.add_argument("run_dir", nargs="?", help="a run's output directory (holding results.json)")
  p.add_argument("--docs", action="store_true",
                 help="write docs/results.md, docs/claims.md, docs/hparams.md and their plots "
                      "from docs/results.in.md and results/*.json (run in the repository root)")
  p.add_argument("--check", action="store_true",
                 help="only compare the committed docs with what --docs generates (exit 1 if "
                      "they differ)")
  p.add_argument("--root", default=".", help="the repository root (default: .)")
  p = sub.add_parser("record", help="copy a finished run's summary.json to "
                     "results/<experiment>.json, from which the docs are generated")
  p.add_argument("run_dir", help="a run's output directory (holding summary.json)")
  p.add_argument("--root", default=".", help="the repository root (default: .)")
  sub.add_parser("methods", help="list the registered methods, their data and description")
  return parser


def _docs(args) -> int:
  """``report --docs`` (write, then report the readings' problems) or ``report --check``."""
  from unlearn_jax import results_docs
  if args.check:
    differences = results_docs.check_docs(args.root)
    for line in differences:
      print(line)
    print(f"docs: {len(differences)} difference(s)" if differences else
          "docs: up to date with results/*.json")
    return 1 if differences else 0
  problems = results_docs.write_docs(args.root)
  for line in problems:
    LOG.error(line)
  LOG.info(f"wrote {results_docs.RESULTS}, {results_docs.CLAIMS}, {results_docs.HPARAMS} and "
           f"their plots under {os.path.abspath(args.root)}")
  return 1 if problems else 0


def _record(args) -> int:
  """``record RUN_DIR``: the run's summary into results/, with a warning for machine paths."""
  from unlearn_jax import summaries
  target = summaries.record(args.run_dir, args.root)
  paths = summaries.absolute_paths(summaries.read_summary(target))
  if paths:
    LOG.warning(f"{target} holds absolute paths ({', '.join(paths)}); they would be committed "
                "with it.")
  LOG.info(f"recorded {target}; now run `unlearn-jax report --docs` and commit both.")
  return 0


def main(argv: list[str] | None = None) -> int:
  """The ``unlearn-jax`` command on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
  argv = sys.argv[1:] if argv is None else argv
  args, unknown = _parser().parse_known_args(argv)
  if args.command in ("run", "train-original", "train-retrain", "evaluate"):
    args.overrides = list(args.overrides) + unknown
  elif unknown:
    _parser().error(f"unrecognized arguments: {' '.join(unknown)}")
  _default_xla_flags()
  _show_messages()
  from unlearn_jax import checkpoint, distributed, report, runner
  from unlearn_jax import config as config_lib

  try:
    if args.command in ("run", "train-original", "train-retrain") and (
        args.distributed or distributed.requested()
        or any(v is not None for v in (args.coordinator, args.num_processes, args.process_id))):
      distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                             timeout_s=args.init_timeout)
    if args.command == "methods":
      from unlearn_jax.methods import METHODS
      for name, m in sorted(METHODS.items()):
        print(f"{name:20s} reads {'+'.join(sorted(m.reads)):15s} {m.description}")
      return 0
    if args.command == "evaluate":
      from unlearn_jax import summaries
      summary = pathlib.Path(args.run_dir, summaries.SUMMARY)
      made_by = summaries.read_summary(summary).get("command") if summary.exists() else None
      results = runner.evaluate_run(args.run_dir, args.overrides)
      if distributed.is_writer():  # the numbers come from the run's models and this evaluation
        summaries.set_command(args.run_dir, " && ".join(filter(None, [made_by, " ".join(
            ["unlearn-jax", *map(shlex.quote, argv)])])))
        print(pathlib.Path(args.run_dir, "results.md").read_text())
      return 0 if results else 1
    if args.command == "report" and (args.docs or args.check):
      return _docs(args)
    if args.command == "report":
      if not args.run_dir:
        _parser().error("report: give RUN_DIR, or --docs / --check")
      results = report.report_from_dir(args.run_dir)
      print(pathlib.Path(args.run_dir, "results.md").read_text())
      return 0 if results else 1
    if args.command == "record":
      return _record(args)
    config = config_lib.load_config(args.config, args.overrides)
    if config.compilation_cache:
      checkpoint.use_compilation_cache(os.path.join(config.cache_dir, "xla"))
    writer = distributed.is_writer()
    if args.command == "run":
      if "protocol" in config:  # a population experiment (config.population_defaults)
        from unlearn_jax.population_runner import run_population_experiment
        results = run_population_experiment(config)
      else:
        results = runner.run_experiment(config)
      if writer:
        from unlearn_jax import summaries
        summaries.set_command(config.output_dir, " ".join(["unlearn-jax", *map(shlex.quote,
                                                                            argv)]))
        print(pathlib.Path(config.output_dir, "results.md").read_text())
        LOG.info(f"wrote {os.path.abspath(config.output_dir)}/results.json, results.md, "
                 "summary.json and plots")
        LOG.info(f"peak host memory: {peak_host_memory_mib():,.0f} MiB")
      return 0 if results else 1
    exp = runner.Experiment(config)
    from unlearn_jax.evaluation.outputs import accuracy
    if args.command == "train-original":
      original, seconds = exp.original()
      acc = accuracy(exp.model, original.params, original.model_state, exp.dataset.test)
      summary = {"model": "original", "test_accuracy": acc, "train_seconds": seconds}
    else:
      retrains, seconds = exp.retrains()
      accs = [accuracy(exp.model, p, s, exp.splits.test_retain) for p, s in retrains]
      summary = {"model": "retrain", "seeds": list(config.retrain_seeds),
                 "test_retain_accuracy": accs, "train_seconds_per_model": seconds}
    if writer:
      print(json.dumps(summary))
    return 0
  except (ValueError, FileNotFoundError, ImportError, TimeoutError) as e:
    LOG.error(str(e))
    return 2


if __name__ == "__main__":
  sys.exit(main())
