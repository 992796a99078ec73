"""`study`: run, resume, validate and analyze hyperparameter studies of the report's models.

Exit codes: 0 success; 1 the study ran but some trials failed; 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Sequence

from study.errors import StudyError

EXIT_OK, EXIT_TRIALS_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        raise StudyError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="study", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    run = sub.add_parser("run", help="run one search-space file, or every .yaml in a folder")
    run.add_argument("spaces", nargs="+", metavar="SPACE", help="a search-space .yaml, or a folder of them")
    add_cluster_args(run)
    over = run.add_argument_group("overrides (replace the file's values, checked the same way)")
    over.add_argument("--dataset", help="dataset registry name, e.g. digits, synthetic, cifar100")
    over.add_argument("--data-dir", help="where datasets are cached (default ~/.cache/cifar-study)")
    over.add_argument("--name", help="experiment folder name (default NAME-YYYYmmdd-HHMMSS)")
    over.add_argument("--num-samples", type=int, help="repeats of the grid, or samples for random/optuna")
    over.add_argument("--max-epochs", type=int, help="epochs for every trial, and ASHA's max_t")
    over.add_argument("--cpus-per-trial", type=float, help="CPU cores per trial")
    over.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; 0.25 packs 4 trials on a GPU")
    over.add_argument("--seed", type=int, help="one fixed trial seed, replacing the file's seed grid")
    over.add_argument("--max-failures", type=int, help="retries of a crashed trial (default 2)")
    over.add_argument("--scheduler", choices=("asha", "fifo"),
                      help="fifo runs every trial to max_t (clean ablations); asha stops the weak early")  # fmt: skip
    over.add_argument("--set", action="append", metavar="FIELD=VALUE",
                      help="fix any config field, e.g. --set num_train=500 --set batch_size=64 (repeatable)")  # fmt: skip
    run.add_argument("--resume", action="store_true",
                     help="continue the newest run of this file (or --name) instead of starting anew")  # fmt: skip

    resume = sub.add_parser("resume", help="continue an interrupted experiment from its folder")
    resume.add_argument("experiment", metavar="EXPERIMENT_DIR", help="the folder `study run` printed")
    add_cluster_args(resume, storage=False)

    validate = sub.add_parser("validate", help="check search-space files without running anything")
    validate.add_argument("spaces", nargs="+", metavar="SPACE")

    analyze = sub.add_parser("analyze", help="tables and learning curves of finished or running experiments")
    analyze.add_argument("experiments", nargs="+", metavar="EXPERIMENT_DIR", help="local folders or URIs (s3://...)")
    analyze.add_argument("--out", help="where tables and plots go (default EXPERIMENT_DIR/analysis)")

    sub.add_parser("models", help="list the model registry")
    sub.add_parser("datasets", help="list the dataset registry")
    return parser


def add_cluster_args(p: argparse.ArgumentParser, storage: bool = True) -> None:
    g = p.add_argument_group("where it runs")
    g.add_argument("--address", help="Ray cluster to join: 'auto' or HOST:PORT (default: a local Ray)")
    if storage:
        g.add_argument("--storage-path", default="results",
                       help="folder or URI (s3://...) for results and checkpoints (default ./results)")  # fmt: skip
    g.add_argument("--autoscale", action="store_true",
                   help="the cluster adds nodes on demand: skip the check that a node fits one trial")  # fmt: skip


def expand_spaces(paths: Sequence[str]) -> list[str]:
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "*.yaml")))
            if not found:
                raise StudyError(f"{path}: folder holds no .yaml search-space files")
            files += found
        else:
            files.append(path)
    return files


OVERRIDES = (
    "dataset", "data_dir", "num_samples", "max_epochs", "cpus_per_trial", "gpus_per_trial", "seed",
    "max_failures", "scheduler", "set",
)  # fmt: skip


def cmd_validate(args: argparse.Namespace) -> int:
    from study.space import load_spec

    for path in expand_spaces(args.spaces):
        spec = load_spec(path)
        print(f"{path}: ok ({spec.num_trials()} trials x up to {spec.max_epochs()} epochs, {spec.search.type} search, {spec.scheduler.type})")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from study import run as runner
    from study.prepare import prepare_inputs
    from study.space import load_spec

    overrides = {k: getattr(args, k) for k in OVERRIDES}
    specs = [load_spec(p, overrides) for p in expand_spaces(args.spaces)]
    if args.name and len(specs) > 1:
        raise StudyError("--name: names one experiment, but several files were given")
    storage = runner.normalize_storage(args.storage_path)
    plans = []
    for spec in specs:  # every check before Ray starts or a folder is written
        prepare_inputs(spec)
        if args.resume:
            path = runner.join(storage, args.name) if args.name else runner.latest_run(storage, spec.name)
            if path is None or not runner.exists(path):
                raise StudyError(f"--resume: no earlier run of {spec.name!r} under {storage}; run it without --resume first")
            runner.verify_checkpoints(path)
        else:
            path = runner.join(storage, args.name or runner.default_run_name(spec))
            if runner.exists(path):
                raise StudyError(f"--name: {path} already exists; pass --resume to continue it, or another --name")
        plans.append((spec, path))
    runner.connect(args.address)
    resources = [runner.resolve_resources(spec, args.autoscale) for spec, _ in plans]  # all, before any run
    failed = 0
    for (spec, path), trial_resources in zip(plans, resources):
        failed += run_one(spec, path, storage, args.resume, trial_resources)
    return EXIT_TRIALS_FAILED if failed else EXIT_OK


def run_one(spec, path: str, storage: str, resume: bool, resources: dict[str, float]) -> int:
    from ray import tune

    from study import run as runner

    runner.warn_if_local_storage(storage)
    print(f"[study] {spec.name}: {spec.num_trials()} trials x up to {spec.max_epochs()} epochs, "
          f"{resources['cpu']:g} CPU + {resources['gpu']:g} GPU each -> {path}", flush=True)  # fmt: skip
    if resume:
        from study.state_backup import repair_state

        repair_state(path)
        tuner = tune.Tuner.restore(path, runner.make_trainable(resources), resume_unfinished=True, resume_errored=True)
    else:
        runner.save_spec(spec, path)
        tuner = runner.make_tuner(spec, storage, path.rsplit("/", 1)[-1], resources)
    results = tuner.fit()
    return report(path, len(results.errors))


def report(path: str, errors: int) -> int:
    from analysis import summarize_experiments

    try:
        summarize_experiments([path], out=None, plots=True)
    except StudyError as exc:  # e.g. every trial failed before its first epoch
        print(f"[study] no tables: {exc}", file=sys.stderr)
    if errors:
        print(f"[study] {errors} trial(s) failed; their errors are in {path}", file=sys.stderr)
    return errors


def cmd_resume(args: argparse.Namespace) -> int:
    from study import run as runner
    from study.prepare import prepare_inputs

    path = args.experiment if "://" in args.experiment else os.path.abspath(args.experiment)
    if not runner.exists(path):
        raise StudyError(f"{args.experiment}: no such experiment folder")
    spec = runner.read_spec(path)
    prepare_inputs(spec)
    runner.verify_checkpoints(path)
    runner.connect(args.address)
    storage = path.rsplit("/", 1)[0]
    resources = runner.resolve_resources(spec, args.autoscale)
    return EXIT_TRIALS_FAILED if run_one(spec, path, storage, True, resources) else EXIT_OK


def cmd_analyze(args: argparse.Namespace) -> int:
    from analysis import summarize_experiments

    summarize_experiments(args.experiments, out=args.out, plots=True)
    return EXIT_OK


def cmd_list(registry) -> int:
    for name in registry.names():
        options = ", ".join(f"{k}={v!r}" for k, v in registry.options(name).items())
        print(f"{name:12s} {registry.summary(name)}" + (f"\n{'':12s} options: {options}" if options else ""))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "models":
            from study.models import MODELS

            return cmd_list(MODELS)
        if args.command == "datasets":
            from study.data import DATASETS

            return cmd_list(DATASETS)
        handler = {"run": cmd_run, "resume": cmd_resume, "validate": cmd_validate, "analyze": cmd_analyze}
        return handler[args.command](args)
    except StudyError as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("study: interrupted; continue with `study resume EXPERIMENT_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
