"""The one training loop every method runs through.

The harness owns data order, optimisation (BertAdam, separate backbone/new-module learning rates, weight
decay, warm-up + cosine, global gradient clipping), precision (``train.precision``, bench/precision.py: fp32,
AMP, or the official fp16 CLIP weights), seeding,
checkpoints (``last.pt`` every epoch, ``best.pt`` selected on the validation split — never on test) and
resume. The contrastive loss is computed on *gathered* states, so multi-process (torchrun) training only has
to initialise the process group: every rank then scores the whole global batch, as the CLIP4Clip lineage does.

Under torchrun (bench/distributed.py) ``train.batch_size`` is the GLOBAL batch (as the official recipes, which
divide it by n_gpu): every rank draws the same permutation, cuts it into the same global batches and takes its
own contiguous slice of each (:class:`GlobalBatchSlices`), so the ranks' slices concatenated by rank are the
single-process batch. Only rank 0 evaluates, logs and writes checkpoints; the others wait at a barrier.
"""

from __future__ import annotations

import pickle
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from tvr_bench.bench import distributed as D
from tvr_bench.bench import progress
from tvr_bench.bench.atomic import atomic_torch_save, failpoint, remove_stale_temps
from tvr_bench.bench.data.pipeline import PairDataset
from tvr_bench.bench.errors import ConfigError
from tvr_bench.bench.optim import build_optimizer, build_scheduler
from tvr_bench.bench.precision import autocast_factory  # noqa: F401  (re-exported: callers import it from here)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns this rank's slice of the gradient (CLIP4Clip's AllGather), times
    ``scale``."""

    @staticmethod
    def forward(ctx, x, scale: float):
        world, rank = dist.get_world_size(), dist.get_rank()
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x)
        ctx.rank, ctx.n, ctx.scale = rank, x.shape[0], scale
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad):
        local = grad[ctx.rank * ctx.n: (ctx.rank + 1) * ctx.n]
        return (local if ctx.scale == 1 else local * ctx.scale), None


#: ``train.gather_backward``: what the gather's backward returns before the ranks' gradients are averaged
GATHER_BACKWARD = {
    # CLIP4Clip's AllGather: this rank's slice. Every rank computes the same global loss, so after DDP's
    # average the encoders train with 1/world of the one-process gradient while the parameters used after
    # the gather (the logit scale, cross-modal heads) get all of it. The official recipes were trained so.
    "official": lambda world: 1.0,
    # the slice times world: the average is then the one-process gradient for every parameter, so a torchrun
    # run equals a one-process run of the same global batch (tested). A named deviation, off by default.
    "exact": lambda world: float(world),
}


def gather_state(state: dict[str, torch.Tensor], backward: str | None = None) -> dict[str, torch.Tensor]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return state
    scale = GATHER_BACKWARD[backward or "official"](dist.get_world_size())
    return {k: _GatherWithGrad.apply(v.contiguous(), scale) for k, v in state.items()}


def symmetric_infonce(logits: torch.Tensor) -> torch.Tensor:
    """CLIP4Clip's CrossEn in both directions; positives on the diagonal; logits already scaled."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _rng_state() -> dict:
    # numpy's state as a tensor and plain numbers: checkpoints load with weights_only=True (no pickled arrays)
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state()}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(s["torch"])


def checkpoint_read_problem(path: Path, exc: BaseException) -> str:
    """Why ``torch.load`` failed on ``path``, in the user's terms."""
    import zipfile

    try:
        if path.stat().st_size == 0:
            return "the file is empty"
        if not zipfile.is_zipfile(path):
            return "not a complete PyTorch checkpoint: truncated, or not a checkpoint at all"
    except OSError as e:
        return e.strerror or str(e)
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds objects other than tensors and plain values (refused: loading it would run its code)"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]


RESUME_ADVICE = "delete it, or rerun with --overwrite to start this run afresh"


def unreadable_checkpoint(path: Path, exc: BaseException, advice: str = RESUME_ADVICE) -> ConfigError:
    return ConfigError(f"checkpoint {path} cannot be read ({checkpoint_read_problem(path, exc)}); {advice}")


def load_checkpoint(path: Path, device: torch.device | str, *, mmap: bool = False,
                    advice: str = RESUME_ADVICE) -> dict:
    """A checkpoint the harness wrote, loaded without executing pickled code (``weights_only=True``); a file
    that cannot be read is one :class:`ConfigError` naming it and what to do."""
    if not Path(path).is_file():
        raise ConfigError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except Exception as exc:
        raise unreadable_checkpoint(path, exc, advice) from None


class GlobalBatchSlices(Sampler):
    """This rank's slice of every global batch: the permutation ``gen`` draws (the same on every rank, since
    ``gen`` is seeded by (seed, epoch) alone) is cut into global batches of ``global_batch`` (incomplete last
    one dropped), and rank r takes items ``[r*b, (r+1)*b)`` of each, ``b = global_batch // world``."""

    def __init__(self, n: int, global_batch: int, *, rank: int, world: int, generator: torch.Generator):
        if global_batch % world:
            raise ConfigError(f"train.batch_size={global_batch} is the global batch and must be divisible by "
                              f"the number of processes ({world})")
        self.n, self.global_batch, self.rank, self.world, self.generator = n, global_batch, rank, world, generator
        self.per_rank = global_batch // world

    def __len__(self) -> int:
        return self.n // self.global_batch

    def __iter__(self):
        # the same call DataLoader(shuffle=True, generator=gen) makes, so one process keeps its exact order
        perm = torch.randperm(self.n, generator=self.generator).tolist()
        lo = self.rank * self.per_rank
        for k in range(len(self)):
            start = k * self.global_batch + lo
            yield perm[start: start + self.per_rank]


def epoch_loader(dataset, global_batch: int, gen: torch.Generator, *, rank: int, world: int,
                 num_workers: int = 0) -> DataLoader:
    """This rank's loader for one epoch. ``gen`` also goes to the DataLoader, which draws its workers' base seed
    from it before the permutation, exactly as ``DataLoader(shuffle=True, generator=gen)`` did: one process
    sees the same batches as before, bit for bit."""
    sampler = GlobalBatchSlices(len(dataset), global_batch, rank=rank, world=world, generator=gen)
    return DataLoader(dataset, batch_sampler=sampler, generator=gen, num_workers=num_workers)


class Trainer:
    def __init__(self, method, cfg: dict, *, device: torch.device, ckpt_dir: Path, config_hash: str,
                 log: Callable[[str], None] = print):
        self.method = method
        self.cfg = cfg
        self.tcfg = cfg["train"]
        self.device = device
        self.ckpt_dir = ckpt_dir
        self.config_hash = config_hash
        self.log = log
        self.autocast, self.amp = autocast_factory(device, self.tcfg["precision"])
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.encode_batch = PairDataset.encode_batch  # fit() takes its dataset's

    def fit(self, pair_dataset, evaluate_val: Callable[[], dict] | None, *, seed: int) -> TrainState:
        """``pair_dataset`` yields the batches and says how the method encodes one (``encode_batch``): pixels and
        tokens (``PairDataset``) or, with a frozen backbone, cached backbone outputs (``FeaturePairDataset``)."""
        tcfg = self.tcfg
        self.encode_batch = pair_dataset.encode_batch
        batch = int(tcfg["batch_size"])
        n = len(pair_dataset)
        if n < 2:
            raise ValueError("training needs at least 2 samples")
        batch = min(batch, n)
        world = D.world_size()
        if batch % world:
            raise ConfigError(f"train.batch_size={batch} is the global batch and must be divisible by the "
                              f"number of processes ({world})")
        steps_per_epoch = n // batch  # drop_last, as the official loaders
        total = steps_per_epoch * int(tcfg["epochs"])
        if tcfg.get("max_steps"):
            total = min(total, int(tcfg["max_steps"]))
        optimizer = build_optimizer(self.method, tcfg)
        scheduler = build_scheduler(optimizer, total, float(tcfg["warmup_proportion"]))
        state = TrainState()
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if D.is_main():  # rank 0 is the only writer; another rank removing its temp would race its save
            remove_stale_temps(self.ckpt_dir)  # a save killed mid-write left its temp file here
        D.barrier()
        last = self.ckpt_dir / "last.pt"
        if last.exists():
            ck = load_checkpoint(last, self.device)
            if ck.get("config_hash") == self.config_hash:
                self.method.load_state_dict(ck["model"])
                optimizer.load_state_dict(ck["optimizer"])
                scheduler.load_state_dict(ck["scheduler"])
                if self.scaler is not None and ck.get("scaler"):
                    self.scaler.load_state_dict(ck["scaler"])
                state = TrainState(**ck["train_state"])
                _set_rng_state(ck["rng"])
                self.log(f"resumed from {last} after epoch {state.epoch} (step {state.step})")
            else:
                self.log(f"ignoring {last}: it was written by a different configuration")
        self.method.to(self.device)
        epochs = int(tcfg["epochs"])
        while state.epoch < epochs and state.step < total:
            epoch = state.epoch
            # the order of epoch e depends only on (seed, e): a resumed run sees the same batches
            gen = torch.Generator().manual_seed(seed * 1000003 + epoch)
            loader = epoch_loader(pair_dataset, batch, gen, rank=D.rank(), world=world,
                                  num_workers=int(tcfg["num_workers"]))
            self.method.train()
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            seen = 0
            shown = progress.bar(min(len(loader), total - state.step), f"epoch {epoch + 1}/{epochs}", "step",
                                 show=D.is_main())  # one bar per run: rank 0's
            for inputs in loader:
                if state.step >= total:
                    break
                losses = self._step(inputs, optimizer, scheduler)
                state.step += 1
                seen += 1
                failpoint("train_step")  # fault injection for the kill -9 tests (inactive unless asked for)
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                if tcfg["log_every"] and state.step % int(tcfg["log_every"]) == 0:
                    self.log(f"  epoch {epoch + 1}/{epochs} step {state.step}/{total} "
                             + " ".join(f"{k}={v:.4f}" for k, v in losses.items()))
                shown.set_postfix(loss=f"{losses['total']:.4f}", refresh=False)
                shown.update()
            shown.close()
            entry: dict[str, Any] = {"epoch": epoch + 1, "steps": state.step,
                                     "seconds": round(time.perf_counter() - t0, 3),
                                     **{f"loss_{k}": v / max(seen, 1) for k, v in sums.items()}}
            if evaluate_val is not None and tcfg["select_on"] == "val":
                # rank 0 evaluates alone (the weights are identical on every rank) and decides; the others get
                # its decision so that their TrainState, saved nowhere but kept consistent, is the same
                better = False
                if D.is_main():
                    val = evaluate_val()
                    d, m = tcfg["select_metric"].split("/")
                    value = float(val[d][m])
                    entry["val"] = {d: val[d]}
                    higher = not m.startswith(("MdR", "MnR"))
                    better = state.best_value is None or (value > state.best_value if higher else value < state.best_value)
                    if better:
                        state.best_value, state.best_epoch = value, epoch + 1
                        atomic_torch_save({"model": self.method.state_dict(), "epoch": epoch + 1,
                                           "config_hash": self.config_hash}, self.ckpt_dir / "best.pt",
                                          point="save_best")
                entry["val"], state.best_value, state.best_epoch = D.broadcast_from_main(
                    (entry.get("val"), state.best_value, state.best_epoch))
            state.epoch = epoch + 1
            state.history.append(entry)
            losses_txt = " ".join(f"{k[5:]}={v:.4f}" for k, v in entry.items() if k.startswith("loss_"))
            val_txt = ""
            if "val" in entry:
                d, m = tcfg["select_metric"].split("/")
                val_txt = f", val {d} {m}={entry['val'][d][m]:.2f}" + (" (best)" if state.best_epoch == epoch + 1 else "")
            self.log(f"epoch {epoch + 1}/{epochs}: {losses_txt} ({entry['seconds']:.1f} s){val_txt}")
            if D.is_main():
                atomic_torch_save({
                    "model": self.method.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                    "train_state": state.__dict__, "rng": _rng_state(), "config_hash": self.config_hash,
                }, last, point="save_last")
            D.barrier()  # no rank runs ahead of a save (or of rank 0's evaluation) another may resume from
        return state

    def _step(self, batch, optimizer, scheduler) -> dict[str, float]:
        with self.autocast():
            text, video = self.encode_batch(self.method, batch, self.device)
            mode = self.tcfg.get("gather_backward")
            text, video = gather_state(text, mode), gather_state(video, mode)
            logits, parts = self.method.score_with_parts(text, video)
            logits = logits.float()
            nce = symmetric_infonce(logits)
            extras = self.method.extra_losses(logits, {k: v.float() for k, v in parts.items()})
            loss = nce + sum(extras.values()) if extras else nce
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {scheduler.last_epoch}: nce={nce.item()} "
                                     + " ".join(f"{k}={v.item()}" for k, v in extras.items()))
        optimizer.zero_grad(set_to_none=True)
        params = [p for p in self.method.parameters() if p.requires_grad]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            D.all_reduce_grads_mean(params)  # an inf on one rank reaches all: every rank skips the same step
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, float(self.tcfg["grad_clip"]))
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            D.all_reduce_grads_mean(params)
            torch.nn.utils.clip_grad_norm_(params, float(self.tcfg["grad_clip"]))
            optimizer.step()
        scheduler.step()
        self.method.backbone.clamp_logit_scale()
        return {"total": loss.item(), "nce": nce.item(), **{k: v.item() for k, v in extras.items()}}
