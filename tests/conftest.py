"""Shared fixtures: a tiny open_clip backbone (random init, no downloads) and helpers."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# passive OpenMP waiting (read when torch loads OpenMP, so before the import): spinning threads make runs
# collapse when the 2 cores are shared
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def _load_real_fixtures() -> None:
    """tests/real_fixtures.py as module ``tvr_bench_real_fixtures`` (importlib mode has no test-package imports)."""
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("tvr_bench_real_fixtures", Path(__file__).with_name("real_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)


_load_real_fixtures()


@pytest.fixture(scope="session")
def tiny_backbone():
    from tvr_bench.bench.backbone import build_backbone

    torch.manual_seed(0)
    return build_backbone("tvr-tiny")


def _make_method(name: str, backbone, *, max_frames: int = 6, max_words: int = 5, **options):
    from tvr_bench.bench.registry import METHODS

    cls = METHODS.get(name)
    opts = cls.default_options()
    opts.update(options)
    torch.manual_seed(0)
    return cls(backbone, opts, max_frames=max_frames, max_words=max_words).eval()


@pytest.fixture(scope="session")
def make_method():
    """Factory: make_method(name, backbone, max_frames=..., max_words=..., **method options)."""
    return _make_method


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One data cache (TVR_BENCH_CACHE) for the whole session: generation is deterministic, so the CLI tests share
    the embedded benchmark instead of regenerating it."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("TVR_BENCH_CACHE")
    os.environ["TVR_BENCH_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("TVR_BENCH_CACHE", None)
    else:
        os.environ["TVR_BENCH_CACHE"] = old
