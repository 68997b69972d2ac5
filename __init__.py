"""tvr-bench: text-video retrieval methods benchmarked under one harness.

The repository root is installed as the package ``tvr_bench``; its folders are the sub-packages
``tvr_bench.bench`` (harness), ``tvr_bench.methods`` (method plugins), ``tvr_bench.datasets`` (dataset
plugins) and ``tvr_bench.reports`` (committed baselines and reports).
"""

__version__ = "0.1.0"
