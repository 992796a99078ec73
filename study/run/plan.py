"""Everything checked before Ray starts: the files, their data and folders, and which run a resume continues."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from study import storage
from study.checks import check_field
from study.errors import StudyError
from study.names import SPEC_FILE
from study.prepare import prepare_inputs
from study.space import StudySpec, load_spec, parse_spec
from study.trust import lock
from study.trust.experiment_state import STATE_GLOB
from study.trust.resume_checks import check_resumable
from study.yaml_input import parse_yaml


@dataclass(frozen=True)
class Plan:
    """One experiment to run: its checked spec and where it goes (or is, for a resume)."""

    spec: StudySpec
    storage: str  # the storage folder or URI
    path: str | None  # the experiment folder; None until a new run creates it
    name: str | None = None  # --name: the exact folder name to create


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
