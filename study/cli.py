"""`study`: run, resume, validate and analyze hyperparameter studies of the report's models; export and use them.

Exit codes: 0 success; 1 the study ran but some trials failed; 2 bad input (one line on stderr);
130, 143 and 129 stopped by SIGINT, SIGTERM and SIGHUP (state saved; `study resume` continues).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from collections.abc import Sequence

from study.errors import StudyError
from study.space import overrides

EXIT_OK, EXIT_TRIALS_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        command = self.prog.removeprefix("study").strip()  # "run" for `study run`; "" for `study`
        raise StudyError(f"{command}: {message}" if command else message)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="study", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    run = sub.add_parser("run", help="run one search-space file, or every .yaml in a folder")
    run.add_argument("spaces", nargs="+", metavar="SPACE", help="a search-space .yaml, or a folder of them")
    add_cluster_args(run)
    overrides.add_arguments(run)
    run.add_argument("--name", help="experiment folder name (default NAME-YYYYmmdd-HHMMSS)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest run of this file (or --name) instead of starting anew",
    )
    add_trust_arg(run)
    add_quiet_arg(run)

    resume = sub.add_parser("resume", help="continue an interrupted experiment from its folder")
    resume.add_argument("experiment", metavar="EXPERIMENT_DIR", help="the folder `study run` printed")
    resume.add_argument(
        "--num-samples",
        type=int,
        help="grow an optuna search to N trials in all (more than its num_samples), finished or not",
    )
    add_cluster_args(resume, storage=False)
    add_trust_arg(resume)
    add_quiet_arg(resume)

    validate = sub.add_parser("validate", help="check search-space files without running anything")
    validate.add_argument("spaces", nargs="+", metavar="SPACE", help="a search-space .yaml, or a folder of them")
    overrides.add_arguments(validate)

    analyze = sub.add_parser("analyze", help="tables and learning curves of finished or running experiments")
    analyze.add_argument("experiments", nargs="+", metavar="EXPERIMENT_DIR", help="local folders or URIs (s3://...)")
    analyze.add_argument(
        "--out", help="where tables and plots go (default EXPERIMENT_DIR/analysis; ./study-analysis for several)"
    )
    analyze.add_argument(
        "--pool",
        action="store_true",
        help="pool runs of the same experiment as more seeds (only if their configs match but for the seed)",
    )

    export = sub.add_parser("export", help="write one trial's trained model to a file (best trial by default)")
    export.add_argument("experiment", metavar="EXPERIMENT_DIR")
    export.add_argument("--trial", metavar="NAME", help="a trial folder name, e.g. cnn64-s1-00005 (default: the best)")
    export.add_argument("--out", required=True, help="the model file to write, e.g. model.pt")
    export.add_argument(
        "--trust",
        action="store_true",
        help="export a checkpoint this user's trials did not sign (someone else's, or changed since): "
        "its weights and the epoch and metrics it claims are then taken as they are",
    )

    predict = sub.add_parser("predict", help="classify image files with an exported model")
    predict.add_argument("model", metavar="MODEL", help="a file written by `study export`")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size; resized to 32x32)")
    predict.add_argument("--top", type=int, default=5, help="classes to print per image (default 5)")
    predict.add_argument(
        "--format",
        choices=("text", "json", "csv"),
        default="text",
        help="text (default): a line per image; json: a list of {path, top: [{class, probability}]}; "
        "csv: a row per image, class_1, probability_1, ...",
    )

    sub.add_parser("models", help="list the model registry")
    sub.add_parser("datasets", help="list the dataset registry")
    return parser


def add_quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet",
        action="store_true",
        help="for logs and job schedulers: no status table but one line per trial as it ends; the tables "
        "are written, not printed, and their folder is named",
    )


def add_trust_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust",
        action="store_true",
        help="resume a folder this user's `study run` did not sign (someone else's, a URI), or whose "
        "checkpoints or results its trials did not sign; Ray unpickles its state, which can run code: read it first",
    )


def add_cluster_args(p: argparse.ArgumentParser, storage: bool = True) -> None:
    g = p.add_argument_group("where it runs")
    g.add_argument(
        "--cache-dir",
        help="where this machine keeps decoded copies of datasets, memory-mapped by the trials (default "
        "$STUDY_CACHE_DIR, else $XDG_CACHE_HOME/cifar-study/datasets, i.e. ~/.cache/cifar-study/datasets); "
        "never written into --data-dir",
    )
    g.add_argument("--address", help="Ray cluster to join: 'auto' or HOST:PORT (default: a local Ray)")
    if storage:
        g.add_argument(
            "--storage-path",
            default="results",
            help="folder or URI (s3://...) for results and checkpoints (default ./results)",
        )
    g.add_argument(
        "--autoscale",
        action="store_true",
        help="the cluster adds nodes on demand: skip the check that a node fits one trial",
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from study.run.plan import check_distinct_names, expand_spaces
    from study.run.validate import report
    from study.space import load_spec

    specs = [load_spec(path, overrides.from_args(args)) for path in expand_spaces(args.spaces)]
    check_distinct_names(specs)  # as `study run` checks them together
    for spec in specs:
        for line in report(spec):
            print(f"{spec.source}: {line}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from study.cluster import release
    from study.run.execute import connect_and_size, resume_experiment, run_experiment
    from study.run.plan import all_finished, plan_runs

    plans = plan_runs(args.spaces, overrides.from_args(args), args.storage_path, args.name, args.resume, args.trust)
    failed = 0
    finished = [plan for plan in plans if plan.path is not None and all_finished(plan.path, plan.spec)]
    for plan in finished:  # --resume of a finished study: its tables, as `study resume` gives them
        failed += print_finished(plan.path, args.quiet)
    plans = [plan for plan in plans if all(plan is not done for done in finished)]
    if not plans:
        return EXIT_TRIALS_FAILED if failed else EXIT_OK
    resources = connect_and_size(plans, args.address, args.autoscale)
    for i, (plan, trial_resources) in enumerate(zip(plans, resources, strict=True)):
        if plan.path is not None:  # --resume
            outcome = resume_experiment(
                plan.path, trial_resources, args.command_line, plan.spec, args.trust, args.quiet
            )
        else:
            outcome = run_experiment(plan, trial_resources, args.command_line, args.quiet)
        if outcome.stopped_by is not None:
            release()  # now, not at exit: none of the study's processes outlives it
            return stopped(outcome)
        if i == len(plans) - 1:
            release()  # the tables need no Ray
        failed += print_outcome(outcome, args.quiet)
    return EXIT_TRIALS_FAILED if failed else EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    from study import storage
    from study.cluster import release
    from study.prepare import prepare_inputs
    from study.run.execute import connect_and_size, resume_experiment
    from study.run.plan import Plan, all_finished, grown, read_spec
    from study.trust import lock
    from study.trust.resume_checks import check_resumable

    path = storage.normalize(args.experiment)
    if not storage.exists(path):
        raise StudyError(f"{args.experiment}: no such experiment folder")
    spec = read_spec(path)
    lock.take(path)  # before the checks: a restore of the backup writes
    if args.num_samples is not None:
        spec = grown(spec, args.num_samples, path)
    check_resumable(path, args.trust)
    if all_finished(path, spec):
        return EXIT_TRIALS_FAILED if print_finished(path, args.quiet) else EXIT_OK
    prepare_inputs(spec)
    (resources,) = connect_and_size([Plan(spec, storage.parent(path), path)], args.address, args.autoscale)
    outcome = resume_experiment(path, resources, args.command_line, spec, args.trust, args.quiet)
    if outcome.stopped_by is not None:
        release()  # now, not at exit: none of the study's processes outlives it
        return stopped(outcome)
    release()
    return EXIT_TRIALS_FAILED if print_outcome(outcome, args.quiet) else EXIT_OK


def print_finished(path: str, quiet: bool = False) -> int:
    """A resume of a study whose every trial had finished: no Ray, no resume record, its tables."""
    from study.run.execute import Outcome

    print(f"[study] every trial of {path} had finished; nothing to resume. Its tables:", file=sys.stderr)
    return print_outcome(Outcome(path, 0, None), quiet)


def print_outcome(outcome, quiet: bool = False) -> int:
    """The tables of a finished experiment (with `quiet`, written but not printed), and how many trials failed."""
    from study.analysis import summarize_experiments

    try:
        summarize_experiments([outcome.path], out=None, plots=True, echo=not quiet)
    except StudyError as exc:  # e.g. every trial failed before its first epoch
        print(f"[study] no tables: {exc}", file=sys.stderr)
    if outcome.failed_trials:
        print(f"[study] {outcome.failed_trials} trial(s) failed; their errors are in {outcome.path}", file=sys.stderr)
    return outcome.failed_trials


def stopped(outcome) -> int:
    """A study stopped by a signal: no tables (it did not finish), the way to continue, 128 + signal."""
    name = signal.Signals(outcome.stopped_by).name
    state = (
        "stopped at once: Tune's state is as of its last periodic save, and each trial continues from its newest checkpoint"
        if outcome.at_once
        else "Tune's state is saved"
    )
    print(f"study: stopped by {name}; {state}. Continue with: study resume {outcome.path}", file=sys.stderr)
    return 128 + outcome.stopped_by


def cmd_analyze(args: argparse.Namespace) -> int:
    from study.analysis import summarize_experiments

    summarize_experiments(args.experiments, out=args.out, plots=True, pool=args.pool)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from study.export.choose import check_out_path, export_best

    check_out_path(args.out)
    done = export_best(args.experiment, args.trial, args.out, args.trust)
    older = (
        f"; its newest checkpoint, the trial ran to epoch {done['last_epoch']}"
        if done["epoch"] < done["last_epoch"]
        else ""
    )
    print(
        f"exported {done['trial']} (epoch {done['epoch']:g}, {done['metric']} {done.get(done['metric'], float('nan')):.4f}"
        f"{older}) -> {args.out}"
    )
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from study.export.images import classify, read_images, top_classes, write_predictions
    from study.export.model_file import load_model

    if args.top < 1:
        raise StudyError(f"--top: expected an integer >= 1, got {args.top}")
    model, info = load_model(args.model)
    ranked = top_classes(classify(model, info, read_images(args.images)), info["classes"], args.top)
    write_predictions(sys.stdout, args.images, ranked, args.format)
    return EXIT_OK


def cmd_list(registry) -> int:
    """Each entry with its options and the defaults a run uses (TrialConfig's, the one source)."""
    from study.config import TrialConfig

    defaults = TrialConfig().to_dict()
    meaning = {"num_train": "the dataset's own size", "num_test": "the dataset's own size"}  # what 0 means

    def shown(key: str) -> str:
        value = defaults[key]
        return f"{key}={value!r}" + (f" ({meaning[key]})" if key in meaning and value == 0 else "")

    for name in registry.names():
        options = ", ".join(shown(k) for k in registry.options(name) if k in defaults)
        print(f"{name:12s} {registry.summary(name)}" + (f"\n{'':12s} options: {options}" if options else ""))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    command_line = ["study", *(sys.argv[1:] if argv is None else argv)]
    try:
        args = build_parser().parse_args(command_line[1:])
        args.command_line = command_line
        if getattr(args, "cache_dir", None):  # read by the data check and, inherited, by the trials
            os.environ["STUDY_CACHE_DIR"] = os.path.abspath(os.path.expanduser(args.cache_dir))
        if args.command == "models":
            from study.models import MODELS

            return cmd_list(MODELS)
        if args.command == "datasets":
            from study.data import DATASETS

            return cmd_list(DATASETS)
        handler = {
            "run": cmd_run,
            "resume": cmd_resume,
            "validate": cmd_validate,
            "analyze": cmd_analyze,
            "export": cmd_export,
            "predict": cmd_predict,
        }
        return handler[args.command](args)
    except StudyError as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the trials started
        made = sys.modules["study.run.execute"].experiments_made if "study.run.execute" in sys.modules else []
        if made:
            print(f"study: interrupted; continue with `study resume {made[-1]}`", file=sys.stderr)
        else:
            print("study: interrupted before any experiment folder was made", file=sys.stderr)
        return 130
    finally:
        if "study.trust.lock" in sys.modules:
            sys.modules["study.trust.lock"].release_all()


def console() -> int:
    """The `study` command: `main()`, then an exit without Python's final collection of every object.

    With torch, Ray, pandas and matplotlib loaded, that collection makes an exit take about a
    second (docs/performance.md). Objects are still freed as Python clears its modules and
    atexit handlers still run; only cyclic garbage left at exit is not collected.
    """
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(console())
