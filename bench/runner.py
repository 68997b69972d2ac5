"""One run = (method, dataset, seed): resolve config, build, train, select, evaluate, measure cost, record.

Nothing is written to the output folder until the record is complete; the record itself is written
atomically. Checkpoints live beside it (``checkpoints/<run>/``) so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

import tvr_bench.bench.cost as C
from tvr_bench.bench import distributed as D
from tvr_bench.bench import provenance
from tvr_bench.bench.backbone import build_backbone, check_pretrained_file, pretrained_sha256
from tvr_bench.bench.checkpoints.loading import load_weights
from tvr_bench.bench.checkpoints.official import FAMILIES
from tvr_bench.bench.config import resolve_config
from tvr_bench.bench.data.feature_cache import BackboneIdentity, FeaturePairDataset, split_features, weights_digest
from tvr_bench.bench.data.pipeline import DecodedClips, FrameStore, PairDataset, preflight_videos, tokenize_captions
from tvr_bench.bench.errors import ConfigError
from tvr_bench.bench.evaluate import encode_videos, evaluate_split, rows_block
from tvr_bench.bench.data.frame_cache import FrameCache, Preprocessor
from tvr_bench.bench.atomic import remove_stale_temps
from tvr_bench.bench.rank_codec import encode_ranks
from tvr_bench.bench.records import SCHEMA_VERSION, record_filename, write_record
from tvr_bench.bench.registry import DATASETS, METHODS
from tvr_bench.bench.run_plan import (RESULT_NEUTRAL_KEYS, Planned, check_checkpoints, check_out_dir, file_sha256,
                                      plan_run, read_eval_checkpoint)
from tvr_bench.bench.units import parse_bytes
from tvr_bench.bench.precision import apply_precision, autocast_factory, resolve_precision
from tvr_bench.bench.train import Trainer, load_checkpoint, seed_everything


def default_cache_dir() -> Path:
    return Path(os.environ.get("TVR_BENCH_CACHE", Path.home() / ".cache" / "tvr-bench"))


def config_hash(cfg: dict) -> str:
    """Hash of everything that determines the trained weights (not the device or output paths)."""
    keep = {k: v for k, v in cfg.items() if k not in ("run", "cost", "eval")}
    # where frames are cached, how many are kept in RAM, loader workers and logging change no weight
    keep["data"] = {k: v for k, v in keep["data"].items() if f"data.{k}" not in RESULT_NEUTRAL_KEYS}
    keep["train"] = {k: v for k, v in keep["train"].items() if f"train.{k}" not in RESULT_NEUTRAL_KEYS}
    keep["seed"] = cfg["run"]["seed"]
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    if name in ("auto", "cuda") and D.active() and torch.cuda.is_available():
        return torch.device(f"cuda:{D.local_rank()}")  # under torchrun each rank drives its own GPU
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return dev


def open_frame_cache(cache_dir: Path, dataset: str, preprocess, max_frames: int,
                     sample_fps: float) -> FrameCache | None:
    """The frame cache ``bench data prepare`` filled for these decoding parameters, if there is one."""
    prep = Preprocessor(preprocess)
    if not prep.splittable:
        return None
    cache = FrameCache(cache_dir, dataset, prep, max_frames, sample_fps)
    return cache if cache.exists() else None


def _reduced_fields(reduced: dict[str, dict], test_split: str) -> dict:
    """``protocol.reduced``: the test split's reduction (else the first one); all of them when several."""
    if not reduced:
        return {}
    out = {"reduced": reduced.get(test_split, next(iter(reduced.values())))}
    if len(reduced) > 1 or test_split not in reduced:
        out["reduced_splits"] = reduced
    return out


def _metric_block(result: dict) -> dict:
    return {"t2v": result["t2v"], "v2t": result["v2t"]}


def needed_splits(cfg: dict, dataset) -> list[str]:
    """The splits this run reads: no training split without training, no validation split without selection
    (MSR-VTT's 1k-A test runs on caption files that carry no 'validate' split)."""
    train = cfg["train"]["epochs"] > 0
    names = [dataset.train_split] if train else []
    if train and cfg["train"]["select_on"] == "val":
        names.append(dataset.val_split)
    return list(dict.fromkeys([*names, dataset.test_split]))


def run_dir(out_dir: Path, method_name: str, dataset_name: str, seed: int) -> Path:
    """Where the run's checkpoints live (resumed from after a kill)."""
    return Path(out_dir) / "checkpoints" / record_filename(method_name, dataset_name, seed)[: -len(".json")]


def preflight(out_dir: Path, cfg: dict, *, overwrite: bool) -> Planned:
    """Everything about the output side that can be checked before work starts: the folder is writable, an
    existing record has these settings (else refused), a checkpoint to resume from is readable."""
    check_out_dir(Path(out_dir))
    check_pretrained_file(cfg["backbone"]["pretrained"])
    if cfg["eval"]["checkpoint"] is not None:
        read_eval_checkpoint(cfg["eval"]["checkpoint"], fmt=cfg["eval"]["checkpoint_format"])
    planned = plan_run(Path(out_dir), cfg, overwrite=overwrite)
    if planned.action == "run" and not overwrite:
        r = cfg["run"]
        check_checkpoints(run_dir(out_dir, r["method"], r["dataset"], r["seed"]))
    return planned


def load_eval_checkpoint(method, method_name: str, path: str | None, device, fmt: str = "auto",
                         log: Callable[[str], None] = print) -> dict | None:
    """Load ``eval.checkpoint``'s weights into ``method`` (strict; official names mapped, tensors cast to the
    model's dtype); what the record says about it."""
    if path is None:
        return None
    weights = read_eval_checkpoint(path, device, mmap=False, fmt=fmt)
    load_weights(method, method_name, weights, path)
    out = {"path": str(path), "sha256": file_sha256(path), "format": weights.format}
    if weights.format == "official":
        out["official_family"] = FAMILIES[method_name].code
        if weights.ignored:
            out["ignored_entries"] = weights.ignored
            log(f"  eval.checkpoint: {path}: entries other than the weights ignored: {', '.join(weights.ignored)}")
    else:
        out.update(epoch=weights.epoch, config_hash=weights.config_hash)
    return out


def checkpoint_origin(evaluated: dict) -> str:
    if evaluated["format"] == "official":
        return f"saved by the official {evaluated['official_family']} code"
    return f"epoch {evaluated['epoch']}"


def precision_block(cfg: dict, device: torch.device, preset: str) -> dict:
    """What the record says about precision: the setting, what it resolved to on this device, and why when the
    harness chose it (``auto``, or ``--preset official`` keeping fp32 on a CPU)."""
    setting = cfg["train"]["precision"]
    used = resolve_precision(setting, device)
    out = {"setting": setting, "used": used}
    if setting == "auto":
        out["note"] = f"auto on {device.type}: {used}"
    elif preset == "official" and "train.precision" not in cfg["run"]["overrides"]:
        out["note"] = ("official recipe: CLIP weights in fp16 (CLIP4Clip's convert_weights)" if used == "fp16-clip"
                       else f"official recipe on {device.type}: fp32 (the official fp16 CLIP weights are a CUDA "
                            "setting)")
    return out


def run_one(method_name: str, dataset_name: str, seed: int, *, out_dir: Path, preset: str = "default",
            overrides: list[str] | None = None, device: str = "cpu", overwrite: bool = False,
            log: Callable[[str], None] = print, command: list[str] | None = None,
            decoded: DecodedClips | None = None) -> Path | None:
    """One (method, dataset, seed) run -> its record path (None when skipped). ``decoded`` shares decoded clips
    with the other runs of the same invocation (results unchanged: decoding is deterministic)."""
    method_cls = METHODS.get(method_name)
    dataset_cls = DATASETS.get(dataset_name)
    dev = resolve_device(device)
    cfg, _ = resolve_config(method_cls=method_cls, dataset_cls=dataset_cls, preset=preset,
                            overrides=overrides, seed=seed, device=str(dev))
    out_dir = Path(out_dir)
    if not D.is_main():  # under torchrun only rank 0 speaks and writes
        log = lambda msg: None  # noqa: E731
    planned = preflight(out_dir, cfg, overwrite=overwrite)
    if planned.note:
        log(planned.note)
    if planned.action == "skip":
        return None
    if D.is_main():
        remove_stale_temps(out_dir)  # a record write killed mid-way left its temp file here
    started = provenance.now_iso()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    d = cfg["data"]

    # -- data (validated before any training: a bad video or caption stops the run here) --
    cache_dir = Path(d["cache_dir"]) if d["cache_dir"] else default_cache_dir()
    dataset = dataset_cls(cfg, cache_dir=cache_dir)
    t0 = time.perf_counter()
    # missing videos stop the run here, listed (or, with data.allow_missing, are dropped and recorded)
    splits = {name: dataset.load_split(name) for name in needed_splits(cfg, dataset)}
    timings["data_prepare_s"] = time.perf_counter() - t0

    seed_everything(seed)
    backbone = build_backbone(cfg["backbone"]["name"], cfg["backbone"]["pretrained"])
    t0 = time.perf_counter()
    frames = open_frame_cache(cache_dir, dataset_name, backbone.preprocess, d["max_frames"], d["sample_fps"])
    seen: dict = {}
    for name in splits:  # no RNG use: the model initialisation below is unchanged
        splits[name] = preflight_videos(splits[name], cache=frames, allow_missing=d["allow_missing"], log=log,
                                        seen=seen)
    if frames is not None:
        every = {v.id: v.path for s in splits.values() for v in s.videos}
        n_cached = sum(frames.has(vid, path) for vid, path in every.items())
        log(f"  frame cache {frames.dir}: {n_cached}/{len(every)} videos cached, the rest decoded on the fly")
    timings["data_prepare_s"] += time.perf_counter() - t0
    reduced = {name: s.protocol["reduced"] for name, s in splits.items() if "reduced" in s.protocol}
    for r in reduced.values():
        log(f"  warning: {dataset_name}/{r['split']} reduced: {r['missing_videos']} video(s) dropped "
            f"(data.allow_missing), {r['used']['videos']} of {r['expected']['videos']} used")
    method = method_cls(backbone, cfg["method"], max_frames=d["max_frames"], max_words=d["max_words"]).to(dev)
    evaluated = load_eval_checkpoint(method, method_name, cfg["eval"]["checkpoint"], dev,
                                     cfg["eval"]["checkpoint_format"], log)
    precision = precision_block(cfg, dev, preset)
    apply_precision(method, precision["used"])  # after loading: a checkpoint is read in the model's fp32
    tokens = {name: tokenize_captions(s, backbone, d["max_words"], d["text_overflow"]) for name, s in splits.items()}
    clip_budget = parse_bytes(d["memory_cache_budget"], "data.memory_cache_budget")
    shared = decoded.for_dataset(dataset_name) if decoded is not None else None
    if d["memory_cache"] and shared is None:
        shared = DecodedClips(clip_budget)  # one budget for all the splits of this run
    stores = {name: FrameStore(s, backbone.preprocess, d["max_frames"], d["sample_fps"], d["memory_cache"],
                               cache=frames, shared=shared, memory_budget=clip_budget)
              for name, s in splits.items()}
    autocast, _ = autocast_factory(dev, precision["used"])
    e = cfg["eval"]
    frozen = bool(cfg["backbone"]["frozen"])
    features: dict = {}
    if frozen:  # nothing of CLIP trains: its outputs are computed once per split and shared by methods and seeds
        method.backbone.requires_grad_(False)
        t0 = time.perf_counter()
        ident = BackboneIdentity(cfg["backbone"]["name"], weights_digest(method.backbone.clip), precision["used"],
                                 dev.type)
        features = {name: split_features(method, s, stores[name], tokens[name], cache_dir=cache_dir, ident=ident,
                                         batch_size=e["batch_size"], device=dev, autocast=autocast, log=log)
                    for name, s in splits.items()}
        timings["feature_cache_s"] = time.perf_counter() - t0

    def evaluate(split_name: str) -> dict:
        return evaluate_split(method, splits[split_name], stores[split_name], tokens[split_name],
                              batch_size=e["batch_size"], chunk_size=e["chunk_size"], tie_policy=e["tie_policy"],
                              device=dev, autocast=autocast, memory_budget=e["memory_budget"],
                              features=features.get(split_name))

    ckpt_dir = run_dir(out_dir, method_name, dataset_name, seed)
    if overwrite and ckpt_dir.exists() and D.is_main():
        # --overwrite means a fresh run: resuming from a finished run's last.pt would skip training entirely
        shutil.rmtree(ckpt_dir)
    D.barrier()
    chash = config_hash(cfg)
    log(f"== {method_name} on {dataset_name}, seed {seed} ({preset} preset, device {dev}) ==")
    t0 = time.perf_counter()
    train_state = None
    trainable = any(p.requires_grad for p in method.parameters())
    if cfg["train"]["epochs"] > 0 and not trainable:
        log(f"  {method_name} has no parameter to train with a frozen backbone: evaluated as it is (zero-shot)")
    if cfg["train"]["epochs"] > 0 and trainable:
        trainer = Trainer(method, cfg, device=dev, ckpt_dir=ckpt_dir, config_hash=chash, log=log)
        tr = dataset.train_split
        pairs = (FeaturePairDataset(features[tr]) if frozen
                 else PairDataset(splits[tr], tokens[tr], stores[tr]))
        train_state = trainer.fit(pairs, (lambda: evaluate(dataset.val_split)), seed=seed)
    timings["train_s"] = time.perf_counter() - t0
    if not D.is_main():
        return None  # the weights are identical on every rank: rank 0 alone tests, measures and records

    # -- test: the last epoch, then the checkpoint selected on validation --
    t0 = time.perf_counter()
    last_result = evaluate(dataset.test_split)
    selection = "last epoch" if train_state is not None else (
        f"checkpoint {evaluated['path']} ({checkpoint_origin(evaluated)}), no training" if evaluated
        else "no training: the backbone's weights and the method's initialisation (zero-shot)"
        + ("; nothing to train with the backbone frozen" if cfg["train"]["epochs"] > 0 else ""))
    best_path = ckpt_dir / "best.pt"
    if train_state is not None and cfg["train"]["select_on"] == "val" and best_path.exists():
        ck = load_checkpoint(best_path, dev)
        if ck.get("config_hash") != chash:
            raise ConfigError(f"checkpoint {best_path} belongs to another configuration; delete it, or rerun with "
                              "--overwrite to start this run afresh")
        method.load_state_dict(ck["model"])
        selection = f"best {cfg['train']['select_metric']} on split '{dataset.val_split}' (epoch {ck['epoch']})"
    meter = C.MemoryMeter(dev)
    with meter.measure():
        report_result = evaluate(dataset.test_split)
    timings["test_eval_s"] = time.perf_counter() - t0
    if shared is not None:
        log(f"  clip memory: {shared.describe()}")
    global_batch = min(int(cfg["train"]["batch_size"]),
                       len(pairs)) if train_state is not None else int(cfg["train"]["batch_size"])

    # -- cost --
    t0 = time.perf_counter()
    test = splits[dataset.test_split]
    flops = C.flop_profile(method, max_words=d["max_words"], max_frames=d["max_frames"],
                           gallery_size=len(test.videos), block=tuple(cfg["cost"]["flops_block"]), device=dev)
    if cfg["cost"]["enabled"]:
        gallery_state = encode_videos(method, stores[dataset.test_split], test, e["batch_size"], dev, autocast)
        latency_chunk = rows_block(method, 1, memory_budget=e["memory_budget"], chunk_size=e["chunk_size"],
                                   device=dev)
        latency = C.query_latency(method, gallery_state, max_words=d["max_words"], chunk_size=latency_chunk,
                                  device=dev, autocast=autocast, min_run_time=cfg["cost"]["latency_min_run_time"])
    else:  # FLOPs and parameters are counted all the same (deterministic and cheap); only the timing is skipped
        latency = {"skipped": "not measured (cost.enabled=false)"}
    timings["cost_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start

    metrics = _metric_block(report_result)
    metrics["last_epoch"] = _metric_block(last_result)
    metrics["selection"] = selection
    metrics["conventions"] = report_result["conventions"]
    metrics["n_queries"] = {"t2v": report_result["n_queries_t2v"], "v2t": report_result["n_queries_v2t"]}
    metrics["gallery"] = {"t2v": report_result["gallery_t2v"], "v2t": report_result["gallery_v2t"]}
    # kept so that intervals and paired tests can be computed from the record alone (bench compare --vs)
    metrics["ranks"] = {d: encode_ranks(report_result["ranks"][d]) for d in ("t2v", "v2t")}
    prov = provenance.collect(dev, command)
    prov.update(started_at=started, finished_at=provenance.now_iso())
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": "run",
        "method": method_name,
        "dataset": dataset_name,
        "seed": seed,
        "metrics": metrics,
        "cost": {
            "params": C.param_counts(method),
            "flops": flops,
            "memory": meter.as_dict(),
            "latency_ms": latency,
            "device": prov["device"],
        },
        "protocol": {**dataset.describe(), "test": test.summary(),
                     "fingerprint": test.fingerprint(),
                     "captions_truncated": {k: v.n_truncated for k, v in tokens.items()},
                     **_reduced_fields(reduced, dataset.test_split)},
        "training": {"history": train_state.history if train_state else [],
                     "best_epoch": train_state.best_epoch if train_state else None,
                     "config_hash": chash,
                     "precision": precision,
                     "backbone": "frozen" if frozen else "trained",
                     "backbone_weights": {"pretrained": cfg["backbone"]["pretrained"],
                                          "sha256": pretrained_sha256(cfg["backbone"]["pretrained"])},
                     **({"feature_cache": {name: {"text": str(f.texts.folder.name), "video": str(f.videos.folder.name)}
                                           for name, f in features.items()}} if frozen else {}),
                     # the config's batch_size is the global batch; the world size is not in the config hash
                     # (a 2-process and a 1-process run of one global batch are the same experiment)
                     "world_size": D.world_size(), "global_batch": global_batch,
                     "per_rank_batch": global_batch // D.world_size(),
                     "gather_backward": (cfg["train"]["gather_backward"] or "official") if D.world_size() > 1 else None,
                     **({"evaluated_checkpoint": evaluated} if evaluated else {})},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "config": cfg,
        "provenance": prov,
    }
    path = write_record(record, out_dir)
    t2v, v2t = metrics["t2v"], metrics["v2t"]
    log(f"-> {path}  t2v R@1 {t2v['R@1']:.1f}  v2t R@1 {v2t['R@1']:.1f}  "
        f"(chance {100 / len(test.videos):.2f}; {timings['total_s']:.0f} s)")
    return path
