"""Shared by the benchmark scripts: machine description, Markdown tables, docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")


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


def record(title: str, rows: list[dict], verdict: str, notes: str = "") -> None:
    """Print the result and append it, dated, to docs/benchmarks.md."""
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = f"\n### {title} ({stamp})\n\nMachine: {machine()}\n\n{markdown_table(rows)}\n\n**{verdict}**\n"
    if notes:
        text += f"\n{notes}\n"
    print(text)
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    if not os.path.exists(DOC):
        with open(DOC, "w") as f:
            f.write("# Benchmarks\n\nEach entry is appended by a script in `benchmarks/`, with its date and machine.\n")
    with open(DOC, "a") as f:
        f.write(text)


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
