"""`bench run` with instruments, for tests/test_distributed.py: launched once as a plain process and once under
torchrun. Writes ``<trace_dir>/rank<r>.pt``: each step's batch indices, the flattened trainable parameters and their
gradients after each step, and how many checkpoint saves and record writes this rank made. Usage: _ddp_driver.py TRACE_DIR ARGS"""

import os
import sys
from pathlib import Path

import torch

import tvr_bench.bench.runner as runner
import tvr_bench.bench.train as train
from tvr_bench.bench import distributed as D
from tvr_bench.cli import main

trace_dir, args = Path(sys.argv[1]), sys.argv[2:]
trace = {"batches": [], "params": [], "grads": [], "saves": 0, "records": 0}

_iter = train.GlobalBatchSlices.__iter__


def recording_iter(self):
    for b in _iter(self):
        trace["batches"].append(list(b))
        yield b


_step = train.Trainer._step


def recording_step(self, *a, **k):
    out = _step(self, *a, **k)
    trace["names"] = [(n, p.numel()) for n, p in self.method.named_parameters() if p.requires_grad]
    trace["params"].append(torch.cat([p.detach().flatten().cpu() for p in self.method.parameters()
                                      if p.requires_grad]).clone())
    # the gradient the optimizer stepped with (reduced over the ranks, clipped): Adam's updates hardly show a
    # gradient scaled by a constant, so the parameters alone would not catch a wrong reduction
    trace["grads"].append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().cpu()
                                     for p in self.method.parameters() if p.requires_grad]).clone())
    return out


_save, _write = train.atomic_torch_save, runner.write_record


def counting_save(*a, **k):
    trace["saves"] += 1
    return _save(*a, **k)


def counting_write(*a, **k):
    trace["records"] += 1
    return _write(*a, **k)


train.GlobalBatchSlices.__iter__ = recording_iter
train.Trainer._step = recording_step
train.atomic_torch_save = counting_save
runner.write_record = counting_write

try:
    main(args, standalone_mode=False)
finally:
    torch.save(trace, trace_dir / f"rank{int(os.environ.get('RANK', 0))}.pt")
