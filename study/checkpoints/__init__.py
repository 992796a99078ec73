"""Trial checkpoints: their files (`files`), when they are written (`policy`), their size (`size`).

Crash recovery, which picks among them after a crash, is `study.trust.recovery`.
"""
