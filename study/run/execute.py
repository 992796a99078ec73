"""Running one experiment, new or resumed: its folder, its record, Tune's fit, and its outcome."""

from __future__ import annotations

import json
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from study import storage
from study.environment import ENVIRONMENT_FILE, collect
from study.errors import StudyError
from study.names import SPEC_FILE
from study.run.plan import Plan, read_spec
from study.run.signals import stop_signals
from study.space import StudySpec
from study.trust import lock
from study.tuning.settings import set_state_save_period


@dataclass(frozen=True)
class Outcome:
    path: str
    failed_trials: int
    stopped_by: int | None  # the signal (SIGINT, SIGTERM, SIGHUP) that stopped the study early, or None
    at_once: bool = False  # a second signal stopped it at once, without Tune's final save


# The experiment folders this process made, for the message of an interrupt that comes outside
# the trials' own signal handling (before they start, or a second Ctrl-C).
experiments_made: list[str] = []


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
    from study.tuning.tuner import make_tuner

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
    from study.tuning.tuner import restore_tuner

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


def banner(spec: StudySpec, path: str, resources: dict[str, float], resumed: bool = False) -> None:
    print(
        f"[study] {'resuming ' if resumed else ''}{spec.name}: {spec.size()}, "
        f"{resources['cpu']:g} CPU + {resources['gpu']:g} GPU each -> {path}",
        flush=True,
    )
    print(f"[study] {spec.selection_note()}", flush=True)
    for note in (None if resumed else spec.repeats_note(), spec.startup_note()):
        if note:
            print(f"[study] {note}", flush=True)


def fit(tuner: Any, path: str) -> Outcome:
    from study.trust import signing
    from study.trust.state_backup import running_in
    from study.tuning.tuner import never_unpickle_errors

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
