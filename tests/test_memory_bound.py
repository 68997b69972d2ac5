"""Memory does not grow with the dataset: the peak RSS of a smoke training run on a generated benchmark with
10x the default number of videos is within 10 % of the default one's.

Both runs are real `bench run` subprocesses (meanp, one epoch of the smoke preset, test evaluation and cost
included), each measured as its own process peak RSS (``ru_maxrss``). The clip memory is given a budget
(8 MiB) that the default benchmark's clips fit in (about 3 MiB) and the 10x one's do not (about 26 MiB), so the
test shows the bound at work rather than a budget so large that neither run reaches it. Frame-cache entries
are memory-mapped and never held (tests/test_frame_cache.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# runs the CLI in this interpreter, then prints the process's own peak RSS (Linux: KiB)
MEASURE = """
import resource, sys
sys.argv = ["bench", *sys.argv[1:]]
from tvr_bench.cli import main
try:
    main()
except SystemExit as exc:
    if exc.code:
        raise
print("PEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
RUN = ["run", "--method", "meanp", "--dataset", "synthetic", "--preset", "smoke", "--set", "train.epochs=1",
       "--set", "data.memory_cache_budget=8MiB", "--no-table"]
TEN_TIMES = ["--set", "data.synthetic.n_train=1280", "--set", "data.synthetic.n_val=320",
             "--set", "data.synthetic.n_test=640"]


def peak_rss(out, *extra) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-c", MEASURE, *RUN, *extra, "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PEAK_RSS_KIB"))
    return int(line.split()[1]) * 1024, proc.stdout + proc.stderr


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_the_number_of_videos(tmp_path):
    base, _ = peak_rss(tmp_path / "default")
    big, log = peak_rss(tmp_path / "ten_times", *TEN_TIMES)
    record = json.loads((tmp_path / "ten_times" / "meanp__synthetic__seed0.json").read_text())
    assert record["protocol"]["test"]["n_videos"] == 640  # the 10x benchmark really was used
    assert "evicted" in log  # the clip memory reached its budget
    print(f"\npeak RSS: default {base / 2**20:.0f} MiB, 10x videos {big / 2**20:.0f} MiB ({big / base - 1:+.1%})")
    assert big <= 1.10 * base
