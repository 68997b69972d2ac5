"""tvr-bench's scoring against a vectorised port of how each method's official code computes the test matrix.

Not a unit test (`make benchmark`; figures printed with ``-s`` and merged into the committed table
reports/efficiency/cpu/scoring_vs_official.md). The peer for speed is the official evaluation itself, not a loop
transcription: benchmarks/official/<method>.py ports each query-dependent method's eval loop and similarity
call (its ``batch_size_val`` block, the per-block work it re-does, its layouts), naming the files it reproduces.
benchmarks/official/common.py says what is measured. Both sides start from the same cached CLIP outputs at
MSR-VTT ViT-B/32 shapes (D = 512, L = 32, F = 12), fp32, ``TVR_OFFICIAL_N`` texts x videos (default 1,000);
the two methods whose official peer runs a transformer per block of 8 or per pair (ts2net, tighttransf) use
``TVR_OFFICIAL_N_HEAVY`` (default 96) so each finishes in about a minute on two cores. Official first, then
tvr-bench, in the same process; outputs asserted equal to 1e-4 of the score range. ``TVR_OFFICIAL_REPORT``
names another table to merge into (e.g. for a smoke run at small N); empty: none.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared machine)

import importlib  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the ports package next to this file

from official import common  # noqa: E402

N = int(os.environ.get("TVR_OFFICIAL_N", "1000"))
HEAVY_N = int(os.environ.get("TVR_OFFICIAL_N_HEAVY", "96"))
METHODS = {"glccl": N, "xclip": N, "xpool": N, "drl": N, "textpool": N, "ts2net": min(N, HEAVY_N),
           "tighttransf": min(N, HEAVY_N)}
TOKENS_PER_FRAME = {"ts2net": 4}  # TS2-Net's cached video input: CLS + 3 selected patches per frame


@pytest.fixture(scope="module")
def backbone():
    from tvr_bench.bench.backbone import build_backbone

    torch.manual_seed(0)
    return build_backbone("ViT-B-32", log=lambda _msg: None).eval()


@pytest.fixture(scope="module")
def dense():
    from tvr_bench.bench.cost.efficiency import dense_matmul_flops_per_s

    return dense_matmul_flops_per_s("cpu")


@pytest.mark.parametrize("name", list(METHODS))
def test_vs_official(name, backbone, dense):
    port = importlib.import_module(f"official.{name}")
    x = common.make_inputs(METHODS[name], tokens_per_frame=TOKENS_PER_FRAME.get(name, 1))
    fig = common.compare(port.case(backbone, x), dense)
    print(f"\n{name} vs official:", fig)
    assert fig["max_abs_diff_over_range"] <= 1e-4
    report = os.environ.get("TVR_OFFICIAL_REPORT")  # another table (a smoke run at small N), "" for none
    if report != "":
        common.record(fig, Path(report) if report else common.REPORT)
