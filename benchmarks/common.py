"""Shared by the benchmark scripts: running `study`, describing the machine, recording a JSON result."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")  # one JSON file per benchmark


def machine() -> str:
    import ray
    import torch

    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}"
    )


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


VERDICTS = ("met", "missed", "not run", "reported")  # reported: a measurement with no target


@dataclass(frozen=True)
class Goal:
    """One goal's outcome in a run: what was asked, what was measured, and whether it holds."""

    id: str  # stable slug, e.g. "peak-rss"
    name: str  # short, for the table's goal column
    target: str  # the target as text, e.g. ">= 0.95"
    figure: str  # the latest measurement, short, for the table
    measured: dict[str, float | int]  # the numbers behind `figure`, units in the keys
    verdict: str  # one of VERDICTS
    note: str = ""  # one or two sentences: why, when missed

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict is {self.verdict!r}, but must be one of {VERDICTS}")


def met(ok: bool) -> str:
    return "met" if ok else "missed"


def add_out_option(parser: argparse.ArgumentParser) -> None:
    """--out: where the JSON result goes; a trial run writes elsewhere and keeps the recorded one."""
    parser.add_argument("--out", default=RESULTS, help=f"folder for the JSON result (default {RESULTS})")


def git_commit() -> str | None:
    """HEAD's hash, with "-dirty" when the tree has uncommitted changes; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.strip() else "")


def record(
    benchmark: str, title: str, goals: list[Goal], rows: list[dict], notes: str = "", out_dir: str = RESULTS
) -> str:
    """Print the result and write it to OUT_DIR/BENCHMARK.json (the latest run; git keeps older ones)."""
    result = {
        "benchmark": benchmark,
        "title": title,
        "goals": [asdict(g) for g in goals],
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "commit": git_commit(),
        "command": shlex.join(["python", "-m", f"benchmarks.{benchmark}", *sys.argv[1:]]),
        "rows": rows,
        "notes": notes,
    }
    print(f"{title}\n\n{markdown_table(rows)}\n")
    for g in goals:
        print(f"{g.name}: {g.figure} (target {g.target}): {g.verdict}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{benchmark}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {path}")
    return path


def write_space(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


def run_study(args: list[str], log_path: str, first_result_glob: str | None = None) -> tuple[float, float | None]:
    """Run `study ...` in a subprocess; return (wall seconds, seconds until a first result row)."""
    import glob

    start = time.perf_counter()
    first = None
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "study", *args], stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if (
                first is None
                and first_result_glob
                and any(os.path.getsize(p) > 0 for p in glob.glob(first_result_glob))
            ):
                first = time.perf_counter() - start
            time.sleep(0.2)  # light polling: this process must not steal the trial's CPU
    if proc.returncode != 0:
        raise SystemExit(f"study {' '.join(args)} failed (rc {proc.returncode}); see {log_path}")
    return time.perf_counter() - start, first


def run_space(text: str) -> dict[str, list[dict]]:
    """`study run` a search space given as YAML text, in a temporary folder; each trial's result rows."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        space = write_space(os.path.join(tmp, "space.yaml"), text)
        run_study(["run", space, "--storage-path", tmp, "--name", "exp"], os.path.join(tmp, "log"))
        return read_results(os.path.join(tmp, "exp"))


def read_results(exp_dir: str) -> dict[str, list[dict]]:
    out = {}
    for trial in sorted(os.listdir(exp_dir)):
        path = os.path.join(exp_dir, trial, "result.json")
        if os.path.exists(path):
            with open(path) as f:
                out[trial] = [json.loads(line) for line in f if line.strip()]
    return out
