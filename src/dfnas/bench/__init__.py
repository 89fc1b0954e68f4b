"""`dfnas bench`: does data-free NAS find architectures as good as NAS on real data?

The paper's protocol as one command: every NAS algorithm searches on real data, dfnas synthetic
data, plain inversion and teacher-labelled noise; every found, random and zero-shot architecture
is trained from scratch on real data with several seeds, and the verdicts compare them.

    dfnas bench --out runs/bench                 # the documented MNIST regime
    dfnas bench --config configs/bench-clutter.yaml --out runs/bench-clutter   # the harder mnist-clutter task
    dfnas bench --quick --out runs/bench-quick   # same protocol, tiny budget

    from dfnas.bench import build_config, run_bench
    results = run_bench(build_config({"algos": ["spos"]}), "runs/bench-spos")

config.py: the settings and how they are built; jobs.py: the jobs; verdicts.py: the statistics
that decide pass/fail; protocol.py: runs the jobs into a folder; report.py: report.md/html.
"""

from dfnas.bench.config import QUICK, BenchConfig, build_config
from dfnas.bench.protocol import run_bench

__all__ = ["QUICK", "BenchConfig", "build_config", "run_bench"]
