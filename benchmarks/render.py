"""Render docs/benchmarks.md from benchmarks/results/*.json: one row per goal, its latest result.

python -m benchmarks.render [--results benchmarks/results] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import glob
import json
import os

from benchmarks.common import RESULTS, ROOT

PAGE = os.path.join(ROOT, "docs", "benchmarks.md")

INTRO = """\
# Benchmarks

<!-- Rendered by `python -m benchmarks.render` from benchmarks/results/*.json: edit those, not this page. -->

Each script in `benchmarks/` measures one or more goals and writes its latest result to
`benchmarks/results/NAME.json` (figures, verdict, date, machine, commit and command line). Run one
with `python -m benchmarks.NAME` (`--help` lists its options; `--out DIR` keeps a trial run out of
the results), then `python -m benchmarks.render` to rewrite this page. Speed and memory are measured
here, never asserted in tests; earlier results are in git's history of `benchmarks/results/`.
"""


def load_results(folder: str) -> list[dict]:
    """Every result file in `folder`, by file name."""
    results = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as f:
            results.append(json.load(f))
    return results


def short_machine(machine: str | None) -> str:
    """The hardware part of common.machine()'s text, before the software versions."""
    return machine.split(";")[0].strip() if machine else "-"


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(folder: str) -> str:
    """The whole page, as Markdown."""
    results = load_results(folder)
    lines = [INTRO, "| goal | target | latest measurement | date | machine | verdict |", "|---|---|---|---|---|---|"]
    why, transcribed = [], False
    for result in results:
        date = result["date"] or "-"
        if result.get("source"):  # not a run of today's script: copied from an earlier page
            date, transcribed = f"{date} *", True
        for goal in result["goals"]:
            name = f"{goal['name']} (`{result['benchmark']}`)"
            row = [name, goal["target"], goal["figure"], date, short_machine(result["machine"]), goal["verdict"]]
            lines.append("| " + " | ".join(cell(c) for c in row) + " |")
            if goal["verdict"] in ("missed", "not run") and goal.get("note"):
                why.append(f"- **{goal['name']}**: {goal['note']}")
    if transcribed:
        lines += [
            "",
            "\\* transcribed from the earlier hand-kept log (the file's `source` names the commit), not re-run since.",
        ]
    if why:
        lines += ["", "## Why missed or not run", "", *why]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=RESULTS, help="folder of result JSON files")
    parser.add_argument("--out", default=PAGE, help="the Markdown page to write")
    args = parser.parse_args()
    text = render(args.results)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out} ({text.count(chr(10))} lines)")


if __name__ == "__main__":
    main()
