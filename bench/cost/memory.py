"""Memory of a phase, measured the same way everywhere: on CUDA the allocator peak (``max_memory_allocated``),
on CPU the process peak resident set size (VmHWM, reset through /proc/self/clear_refs where Linux allows),
labelled as such; and, for block sizing, a deterministic peak of the tensor bytes one call allocates.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from tvr_bench.bench.api.state import State


def _read_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@dataclass
class MemoryMeter:
    device: torch.device
    peak_bytes: int = 0
    baseline_bytes: int = 0
    kind: str = ""
    reset_ok: bool = True

    @contextlib.contextmanager
    def measure(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
            self.kind = "cuda_allocated_peak"
            yield self
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
            self.reserved_bytes = int(torch.cuda.max_memory_reserved(self.device))
        else:
            self.kind = "cpu_peak_rss"
            self.reset_ok = _reset_cpu_peak()
            self.baseline_bytes = _read_status("VmRSS") or 0
            if not self.reset_ok:  # fall back to the lifetime high-water mark
                import resource

                self.baseline_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            yield self
            peak = _read_status("VmHWM")
            if peak is None:
                import resource

                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak_bytes = int(peak)

    def as_dict(self) -> dict:
        d = {"peak_bytes": self.peak_bytes, "kind": self.kind, "baseline_bytes": self.baseline_bytes,
             "phase": "test evaluation (gallery encoding + chunked scoring + ranking)"}
        if self.kind == "cpu_peak_rss":
            d["note"] = "process peak RSS (whole process, libraries included)" + (
                "" if self.reset_ok else "; lifetime high-water mark (VmHWM reset unavailable)")
        if hasattr(self, "reserved_bytes"):
            d["reserved_bytes"] = self.reserved_bytes
        return d


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storages allocated inside the ``with`` block and alive at the same time.

    Every aten op's outputs are inspected: a storage not seen before and not one of the op's inputs is a new
    allocation; it is released when the last tensor viewing it dies. Storages that existed before the block
    (weights, cached states, a preallocated output matrix) are not counted, so the number is the scoring
    intermediates' peak, deterministic and independent of allocator caching (unlike RSS). Slow: for probes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        ent = self._live.get(key)
        if ent is None:
            return
        ent[1] -= 1
        if ent[1] == 0:
            del self._live[key]
            self.current -= ent[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = None
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            st = t.untyped_storage()
            key = st.data_ptr()
            if key == 0:
                continue
            if key in self._live:
                self._live[key][1] += 1
            else:
                if inputs is None:
                    inputs = {a.untyped_storage().data_ptr() for a in tree_leaves((args, kwargs))
                              if isinstance(a, torch.Tensor) and a.device.type != "meta"}
                if key in inputs:
                    continue  # a view of, or an in-place result on, a storage that existed before
                self._live[key] = [int(st.nbytes()), 1]
                self.current += int(st.nbytes())
                self.peak = max(self.peak, self.current)
            weakref.finalize(t, self._release, key)
        return out


def block_intermediate_bytes(method, text: State, video: State) -> int:
    """Tensor-bytes peak of one ``score`` call on the given block."""
    with torch.no_grad(), LiveTensorBytes() as tracker:
        method.score(text, video)
    return tracker.peak
