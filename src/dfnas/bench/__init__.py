"""`dfnas bench`: does data-free NAS find architectures as good as NAS on real data? (SPEC section 4)

    dfnas bench --out runs/bench                 # the documented MNIST regime
    dfnas bench configs/bench-clutter.yaml --out runs/bench-clutter   # the harder mnist-clutter task
    dfnas bench --quick --out runs/bench-quick   # same protocol, tiny budget

    from dfnas.bench import build_config, run_bench
    results = run_bench(build_config({"algos": ["spos"]}), "runs/bench-spos")
"""

from dfnas.bench.config import QUICK, BenchConfig
from dfnas.bench.protocol import build_config, run_bench

__all__ = ["QUICK", "BenchConfig", "build_config", "run_bench"]
