"""benchmarks.render: result JSON files in, one table row per goal out (no Ray, no subprocess)."""

from __future__ import annotations

import json

from benchmarks.render import render


def result(benchmark: str, goals: list[dict], **fields) -> dict:
    return {
        "benchmark": benchmark,
        "title": benchmark,
        "goals": goals,
        "date": "2026-12-07 10:00 UTC",
        "machine": "AMD EPYC, 2 cores, 24 GiB RAM, no GPU; Python 3.11.7, torch 2.14.1, ray 2.60.0",
        "commit": "abc123",
        "command": f"python -m benchmarks.{benchmark}",
        "rows": [],
        "notes": "",
        **fields,
    }


def goal(goal_id: str, target: str, figure: str, verdict: str, note: str = "") -> dict:
    return {
        "id": goal_id,
        "name": goal_id.replace("-", " "),
        "target": target,
        "figure": figure,
        "measured": {},
        "verdict": verdict,
        "note": note,
    }


def test_a_row_per_goal_with_target_figure_date_and_verdict(tmp_path):
    memory = result("memory", [goal("peak-rss", "< 1,500 MiB", "1,478 MiB", "met", "moves by 40 MiB")])
    overhead = result(
        "trial_overhead",
        [
            goal("quickstart-efficiency", ">= 0.6", "0.59 (median of 5 runs)", "missed", "imports take 2.85 s"),
            goal("trial-throughput", ">= 2 trials/s", "5.80 trials/s", "met"),
        ],
        date="2026-12-01 05:06",
        source="transcribed from docs/benchmarks.md at commit d68ec3a",
    )
    for data in (memory, overhead):
        (tmp_path / f"{data['benchmark']}.json").write_text(json.dumps(data))

    page = render(str(tmp_path))

    rows = [line for line in page.splitlines() if line.startswith("| ") and "(`" in line]
    assert len(rows) == 3
    by_goal = {row.split(" | ")[0]: row for row in rows}
    peak = by_goal["| peak rss (`memory`)"]
    assert "< 1,500 MiB" in peak and "1,478 MiB" in peak and "2026-12-07 10:00 UTC" in peak
    assert peak.endswith("| met |") and "AMD EPYC, 2 cores, 24 GiB RAM, no GPU |" in peak and "torch" not in peak
    quick = by_goal["| quickstart efficiency (`trial_overhead`)"]
    assert ">= 0.6" in quick and "0.59 (median of 5 runs)" in quick and quick.endswith("| missed |")
    assert "2026-12-01 05:06 *" in quick  # transcribed results are marked
    assert "- **quickstart efficiency**: imports take 2.85 s" in page  # why, for a miss
    assert "moves by 40 MiB" not in page  # a met goal's note stays in its JSON


def test_a_pipe_in_a_figure_does_not_break_the_table(tmp_path):
    data = result("gpu", [goal("gpu-epoch", "< 1 s", "a | b", "not run", "no GPU lent")], machine=None)
    (tmp_path / "gpu.json").write_text(json.dumps(data))
    page = render(str(tmp_path))
    assert "| a \\| b | 2026-12-07 10:00 UTC | - | not run |" in page
    assert "- **gpu epoch**: no GPU lent" in page
