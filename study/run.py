"""Orchestration: from search-space files to finished (or resumed) experiments.

`plan_runs` does every check that can fail before Ray starts; `run_experiment` and
`resume_experiment` then run one experiment each and return its outcome. The CLI only parses
arguments and prints; everything between lives here.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from study import storage
from study.checks import check_field
from study.environment import ENVIRONMENT_FILE, collect
from study.errors import StudyError
from study.names import SPEC_FILE
from study.prepare import prepare_inputs
from study.space import StudySpec, load_spec, parse_spec
from study.trust import lock
from study.trust.experiment_state import STATE_GLOB
from study.trust.resume_checks import check_results_to_export, check_resumable
from study.yaml_input import parse_yaml


@dataclass(frozen=True)
class Plan:
    """One experiment to run: its checked spec and where it goes (or is, for a resume)."""

    spec: StudySpec
    storage: str  # the storage folder or URI
    path: str | None  # the experiment folder; None until a new run creates it
    name: str | None = None  # --name: the exact folder name to create


@dataclass(frozen=True)
class Outcome:
    path: str
    failed_trials: int
    stopped_by: int | None  # the signal (SIGINT, SIGTERM, SIGHUP) that stopped the study early, or None
    at_once: bool = False  # a second signal stopped it at once, without Tune's final save


# The experiment folders this process made, for the message of an interrupt that comes outside
# the trials' own signal handling (before they start, or a second Ctrl-C).
experiments_made: list[str] = []


def all_finished(path: str, spec: StudySpec) -> bool:
    """Whether Tune's saved state has every planned trial TERMINATED (read as plain JSON): then a
    resume has nothing to run. A failed trial is not finished: a resume retries it."""
    from study.trust.experiment_state import trial_states

    if storage.is_uri(path):
        return False  # a resume decides, as before
    states = sorted(glob.glob(os.path.join(path, STATE_GLOB)))
    known = trial_states(states[-1]) if states else {}
    return len(known) == spec.num_trials() and all(t["status"] == "TERMINATED" for t in known.values())


def expand_spaces(paths: Sequence[str]) -> list[str]:
    """Files as given; a folder stands for every .yaml in it, sorted."""
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


def check_distinct_names(specs: Sequence[StudySpec]) -> None:
    """Experiments run together write one folder each, named by the file's `name`."""
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.name in seen:
            if os.path.realpath(seen[spec.name]) == os.path.realpath(spec.source):
                raise StudyError(f"{spec.source}: given twice; each file runs once")
            raise StudyError(
                f"{spec.source}: name: {spec.name!r} is also the name of {seen[spec.name]}; "
                "experiments run together need different names"
            )
        seen[spec.name] = spec.source


def plan_runs(
    spaces: Sequence[str],
    overrides: Mapping[str, Any],
    storage_path: str,
    name: str | None,
    resume: bool,
    trust: bool = False,
) -> list[Plan]:
    """Check every file, its data and its target folder; nothing is written and Ray is not started."""
    if name is not None:
        check_field(StudySpec, "name", name, "--name: ")
    specs = [load_spec(p, overrides) for p in expand_spaces(spaces)]
    if name and len(specs) > 1:
        raise StudyError("--name: names one experiment folder, but several files were given")
    check_distinct_names(specs)
    root = storage.normalize(storage_path)
    storage.check_writable(root)
    plans = []
    for spec in specs:
        prepare_inputs(spec)
        if resume:
            path = find_run_to_resume(root, spec, name)
            if not storage.is_uri(path):
                storage.check_no_symlink(root, path)
            lock.take(path)  # before the checks: a restore of the backup writes
            check_resumable(path, trust)
            plans.append(Plan(spec, root, path))
        else:
            if name and storage.exists(storage.join(root, name)):  # early; the exclusive mkdir decides
                raise storage.name_taken(storage.join(root, name))
            plans.append(Plan(spec, root, None, name))
    return plans


def find_run_to_resume(root: str, spec: StudySpec, name: str | None) -> str:
    """The folder `study run --resume` continues: --name exactly, else the newest run of this study."""
    runs = [storage.join(root, name)] if name else storage.runs_of(root, spec.name)
    runs = [r for r in runs if storage.exists(r)]
    if not runs and name:
        raise StudyError(
            f"--resume --name {name}: no run named {name!r} under {root}; check the name, or drop --resume"
        )
    if not runs:
        raise StudyError(f"--resume: no earlier run of {spec.name!r} under {root}; run it without --resume first")
    path = runs[-1]
    saved = read_spec(path)
    if saved.text != spec.text:
        before, now = yaml_keys(saved.text), yaml_keys(spec.text)
        differ = [k for k in {**before, **now} if before.get(k) != now.get(k)]
        if differ == ["num_samples"]:  # more samples: the search grows (or says why it cannot)
            check_growth(saved, spec.num_samples, path)
            return path
        raise StudyError(
            f"--resume: {spec.source} (with these flags) is not the study in {storage.join(path, SPEC_FILE)} "
            f"(they differ in: {', '.join(differ)}); continue that one with `study resume {path}`, or drop --resume"
        )
    return path


def check_growth(saved: StudySpec, num_samples: int, path: str) -> None:
    """A resume may add trials to an optuna search: num_samples above the saved one."""
    check_field(StudySpec, "num_samples", num_samples, "--num-samples: ")
    if saved.search.type != "optuna" and not saved.sampled():
        raise StudyError(
            f"--num-samples: {path} is a grid search, whose trials (grid points x num_samples) a resume cannot "
            "add to; to add seeds, run the file again with `--seed N` and pool the runs with `study analyze --pool`"
        )
    if saved.search.type != "optuna":
        raise StudyError(
            f"--num-samples: {path} is a random search, and only an optuna search can grow (Tune's variant "
            "generator cannot add samples to a restored run); run the file again with more samples instead"
        )
    if num_samples <= saved.num_samples:
        raise StudyError(
            f"--num-samples {num_samples}: the search in {path} has num_samples {saved.num_samples} already; "
            f"to add trials, give more than {saved.num_samples}"
        )


def grown(saved: StudySpec, num_samples: int, path: str) -> StudySpec:
    """The saved study with num_samples raised, for `study resume --num-samples N`."""
    check_growth(saved, num_samples, path)
    raw = yaml_keys(saved.text)
    raw["num_samples"] = num_samples
    return parse_spec(raw, saved.source, {})


def yaml_keys(text: str) -> dict[str, Any]:
    return dict(parse_yaml(text, SPEC_FILE) or {})


def read_spec(experiment_path: str) -> StudySpec:
    spec_path = storage.join(experiment_path, SPEC_FILE)
    try:
        text = storage.read_text(spec_path)
    except (FileNotFoundError, OSError):
        raise StudyError(
            f"{experiment_path}: not a study experiment folder (no {SPEC_FILE}); give the folder `study run` printed"
        ) from None
    raw = parse_yaml(text, spec_path)
    if not isinstance(raw, dict):
        raise StudyError(f"{spec_path}: expected a mapping of keys, got {type(raw).__name__}")
    return parse_spec(raw, spec_path, {})


def write_environment(experiment_path: str, command: Sequence[str], spec: StudySpec, resumed: bool = False) -> None:
    """Record what produced this run (environment.json), and what it selects on; a resume appends its own record."""
    target = storage.join(experiment_path, ENVIRONMENT_FILE)
    record = {**collect(command), "selection": spec.selection()}
    if resumed and storage.is_file(target):
        previous = json.loads(storage.read_text(target))
        previous.setdefault("resumes", []).append(record)
        record = previous
    storage.write_text(target, json.dumps(record, indent=2))


def connect_and_size(plans: Sequence[Plan], address: str | None, autoscale: bool) -> list[dict[str, float]]:
    """Start or join Ray, then check that one trial of every plan fits a node (before any runs)."""
    from study.cluster import check_local_cpus, connect, release, resolve_resources

    for plan in plans:
        check_local_cpus(plan.spec, address, autoscale)
    connect(address)
    try:
        return [resolve_resources(plan.spec, autoscale) for plan in plans]
    except StudyError:
        release()  # the local Ray started for this run, stopped before the error's one line
        raise


def run_experiment(plan: Plan, resources: dict[str, float], command: Sequence[str], quiet: bool = False) -> Outcome:
    """Create the experiment folder (exclusively), record spec and environment, and run it
    (`quiet`: a line per trial as it ends, not Ray's status table)."""
    from study.cluster import warn_if_local_storage
    from study.tuner import make_tuner

    warn_if_local_storage(plan.storage)
    set_state_save_period(plan.spec.num_trials())
    path = storage.create_experiment_dir(plan.storage, plan.name or plan.spec.name, exact=bool(plan.name))
    lock.take(path)
    experiments_made.append(path)
    banner(plan.spec, path, resources)
    storage.write_text(storage.join(path, SPEC_FILE), plan.spec.text)
    write_environment(path, command, plan.spec)
    return fit(make_tuner(plan.spec, path, resources, quiet), path)


def resume_experiment(
    path: str,
    resources: dict[str, float],
    command: Sequence[str],
    spec: StudySpec,
    trust: bool = False,
    quiet: bool = False,
) -> Outcome:
    """Continue an interrupted experiment through Ray's own `Tuner.restore`; with a `spec` of more
    samples than the saved one, add trials to its optuna search and save the grown study.yaml.
    With `trust`, its trials also load checkpoints not signed for them."""
    from study.tuner import restore_tuner

    set_state_save_period(spec.num_trials())
    tuner = restore_tuner(path, resources, spec, trust, quiet)  # before anything is read or written: it may refuse
    saved_samples = read_spec(path).num_samples
    grows = spec.num_samples != saved_samples
    banner(spec, path, resources, resumed=True)
    write_environment(path, command, spec, resumed=True)
    if grows:  # the study is now the grown one; signed, or the next resume would refuse it
        print(f"[study] growing the search from {saved_samples} to {spec.num_samples} trials", flush=True)
        storage.write_text(storage.join(path, SPEC_FILE), spec.text)
        if not storage.is_uri(path):
            from study.trust import signing

            signing.sign(path)
    return fit(tuner, path)


# Set by the user before `study` started, it wins over state_save_period.
USER_STATE_PERIOD = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")


def state_save_period(num_trials: int) -> float:
    """Seconds between saves of Tune's experiment state: 10 ms per trial, from 1 s to 60 s.

    Tune's state holds every trial (about 25 KB each) and is written whole at each save, so
    saving it after every result (Tune's TUNE_GLOBAL_CHECKPOINT_S=0) costs time and bytes per
    result that grow with the number of trials. A period that grows with the state keeps both
    flat per result (benchmarks/flat_cost.py). Ray's own "auto" waits at least 10 s, whatever
    the size. A stale state costs no repeated epochs: a resumed trial continues from its
    newest checkpoint, whatever Tune last recorded (see study.trust.recovery).
    """
    return min(60.0, max(1.0, 0.01 * num_trials))


def set_state_save_period(num_trials: int) -> None:
    if USER_STATE_PERIOD is None:
        os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = f"{state_save_period(num_trials):g}"


def banner(spec: StudySpec, path: str, resources: dict[str, float], resumed: bool = False) -> None:
    trials, epochs = spec.num_trials(), spec.max_epochs()
    print(
        f"[study] {'resuming ' if resumed else ''}{spec.name}: {trials} trial{'s' * (trials != 1)} x up to "
        f"{epochs} epoch{'s' * (epochs != 1)}, {resources['cpu']:g} CPU + {resources['gpu']:g} GPU each -> {path}",
        flush=True,
    )
    print(f"[study] {spec.selection_note()}", flush=True)
    for note in (None if resumed else spec.repeats_note(), spec.startup_note()):
        if note:
            print(f"[study] {note}", flush=True)


def fit(tuner: Any, path: str) -> Outcome:
    from study.trust import signing
    from study.trust.state_backup import running_in
    from study.tuner import never_unpickle_errors

    never_unpickle_errors()

    signing.secret_key()  # made here if new, before any trial looks for it (trials never make one)
    with stop_signals() as received, running_in(path):
        try:
            results = tuner.fit()
        except KeyboardInterrupt:  # a second signal: stopped at once; the state of the last save stays
            return Outcome(path, 0, received[0] if received else signal.SIGINT, at_once=True)
    from study.trust.state_backup import StateBackup

    # Tune's final save came after the last step's signature and backup: sign it, and keep it
    # as the backup too (a damaged state file of a finished study then loses nothing).
    if not StateBackup(path).copy_state():
        signing.sign(path)
    if not storage.is_uri(path):
        signing.sign_all_results(path)  # every trial's params.json and result.json, as they ended
    return Outcome(path, results.num_errors, received[0] if received else None)  # from statuses


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal or SSH session) stop a study the way Tune
    stops on SIGUSR1: trials end, state is saved.

    Tune's own SIGINT handler is turned off so that all three take one path, and the caller
    learns which one came (the list it yields), to exit 128 + its number instead of printing
    tables as if the study had finished. A second signal stops at once (KeyboardInterrupt).
    """
    received: list[int] = []
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

    def handle(signum: int, frame: Any) -> None:
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if received or not callable(tune_handler):  # a second signal, or Tune not listening yet
            raise KeyboardInterrupt
        received.append(signum)
        print(
            f"\n[study] {signal.Signals(signum).name}: stopping the trials and saving Tune's state "
            "(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune ends its loop and saves the experiment

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


EXPORTED_METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


def export_best(experiment: str, trial: str | None, out: str, trust: bool = False) -> dict[str, Any]:
    """Export one trial's newest checkpoint: `trial` (its folder name), else the best trial by the
    file's metric and mode at each trial's last epoch (what Tune's get_best_result does). Its
    checkpoints must be signed by this user's trials unless `trust` (see `newest_checkpoint`)."""
    import pandas as pd

    from study.analysis.load import load_experiment
    from study.export import export_checkpoint, newest_checkpoint

    path = storage.normalize(experiment)
    if not storage.exists(path):
        raise StudyError(f"{experiment}: no such experiment folder")
    spec = read_spec(path)
    frame = load_experiment(path)
    last = frame.sort_values("epoch").groupby("trial_dir").tail(1)
    if trial is not None:
        check_field(StudySpec, "name", trial, "--trial: ")
        chosen = last[last["trial_dir"] == trial]
        if chosen.empty:
            raise StudyError(
                f"--trial {trial}: no such trial in {path}; trials: {', '.join(sorted(last['trial_dir']))}"
            )
    else:
        ranked = last.dropna(subset=[spec.metric]).sort_values(  # ties: the first trial folder by name
            [spec.metric, "trial_dir"], ascending=[spec.mode == "min", True], kind="stable"
        )
        chosen = ranked.head(1)
        if chosen.empty:
            raise StudyError(f"{path}: no trial reported {spec.metric}; nothing to export")
    name = chosen.iloc[0]["trial_dir"]
    # The metrics of the epoch the checkpoint holds, which can be older than the trial's last
    # epoch (a run stopped or crashed between two checkpoints), never those of another epoch.
    per_epoch = {
        int(row["epoch"]): {k: float(row[k]) for k in EXPORTED_METRICS if k in row and pd.notna(row[k])}
        for _, row in frame[frame["trial_dir"] == name].iterrows()
    }
    source = storage.join(path, name)
    if not trust:
        check_results_to_export(source)
    exported = export_checkpoint(newest_checkpoint(source, trust), out, per_epoch, source)
    last_epoch = int(chosen.iloc[0]["epoch"])
    return {"trial": name, "metric": spec.metric, "last_epoch": last_epoch, **exported["metrics"]}
