"""Speed and memory benchmarks: run one with `python -m benchmarks.NAME`, render with `python -m benchmarks.render`."""
