"""One function per subcommand: each calls into the package and prints what the user sees."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from study.errors import StudyError
from study.space import overrides

EXIT_OK, EXIT_TRIALS_FAILED, EXIT_BAD_INPUT = 0, 1, 2


@contextmanager
def holding_locks() -> Iterator[None]:
    """The experiment locks a command takes are released however it ends."""
    from study.trust import lock

    try:
        yield
    finally:
        lock.release_all()


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
    with holding_locks():
        return run_plans(args)


def run_plans(args: argparse.Namespace) -> int:
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
    with holding_locks():
        return resume(args)


def resume(args: argparse.Namespace) -> int:
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
