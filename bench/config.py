"""Run configuration: one nested dict resolved from layered defaults, recorded whole in every run record.

Resolution order (later wins): harness defaults -> dataset defaults -> method options -> preset ->
``--set key=value`` overrides. Every key that may be set must already exist after the first three layers, so a
typo in ``--set`` is an error that names the key (with "did you mean").

The default comparison is one shared recipe for every method (identical frames, words, optimiser, schedule,
epochs, batch). ``--preset official`` instead applies the method's own recipe for the dataset, taken from its
official scripts (``MethodInfo.official``); the run record names the preset.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tvr_bench.bench.backbone import architecture
from tvr_bench.bench.config_schema import SECTIONS, check_section, coerce_raw, method_options_model
from tvr_bench.bench.errors import ConfigError, did_you_mean
from tvr_bench.bench.precision import PRECISIONS, official_precision

HARNESS_DEFAULTS: dict[str, Any] = {
    # frozen: train only the method's own modules on cached backbone outputs (bench/data/feature_cache.py)
    "backbone": {"name": "tvr-tiny", "pretrained": None, "frozen": False},
    "data": {
        "max_frames": 12,
        "max_words": 32,
        "sample_fps": 1.0,
        # what to do with a caption longer than max_words tokens: "error" or "truncate" (CLIP4Clip truncates
        # to max_words-1 tokens + [EOT]); real datasets declare "truncate", the embedded one "error".
        "text_overflow": "error",
        "root": None,
        "cache_dir": None,  # None: $TVR_BENCH_CACHE or ~/.cache/tvr-bench
        # keep decoded clips (uint8 crops) in RAM for the run, least recently used out beyond the budget, so
        # memory does not grow with the dataset; frame-cache entries are read memory-mapped and never held
        "memory_cache": True,
        "memory_cache_budget": "4GiB",
        "allow_missing": False,  # never shrink a test set silently
    },
    "method": {},
    "train": {
        "epochs": 5,
        "batch_size": 128,
        "lr": 1e-4,  # new modules (temporal transformer, score matrices, ...)
        "coef_lr": 1e-3,  # backbone lr = lr * coef_lr (CLIP4Clip lineage)
        "weight_decay": 0.2,
        "betas": [0.9, 0.98],
        "eps": 1e-6,
        "warmup_proportion": 0.1,
        "grad_clip": 1.0,
        "optimizer": "bertadam",  # or "adamw"
        # auto: AMP (fp16 autocast) on CUDA, fp32 on CPU; or "fp32", "amp", "fp16-clip" (the official recipe:
        # CLIP's weights in fp16, bench/precision.py; what --preset official uses on CUDA)
        "precision": "auto",
        "num_workers": 0,
        "select_on": "val",  # best checkpoint chosen on this split (never "test")
        "select_metric": "t2v/R@1",
        "max_steps": None,  # cap on optimisation steps (debugging); None = epochs x steps per epoch
        "log_every": 10,
        # torchrun: the gradient the all-gather passes back (bench/train.py GATHER_BACKWARD); None = "official"
        # (CLIP4Clip: this rank's slice), "exact" = equal to one process with the same global batch
        "gather_backward": None,
    },
    # chunk_size None: the scoring block is sized from memory_budget (bytes or '2GB'; None = 2 GiB on CPU, a
    # quarter of free GPU memory on CUDA) and the method's score_pair_bytes; an int forces that block side
    # checkpoint: a checkpoint to evaluate with train.epochs=0 (`bench eval`): a tvr-bench best.pt / last.pt or a
    # state dict saved by the method's official code; checkpoint_format: auto, tvr-bench or official
    "eval": {"batch_size": 64, "chunk_size": None, "memory_budget": None, "tie_policy": "pessimistic",
             "checkpoint": None, "checkpoint_format": "auto"},
    "cost": {
        "enabled": True,  # false: no latency measurement (FLOPs, parameters and memory are recorded all the same)
        "flops_block": [4, 8],  # (texts, videos) of the block whose FLOPs are divided per pair
        "latency_gallery": None,  # None: the test gallery size
        "latency_min_run_time": 0.5,
    },
}

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "official": {},  # resolved per (method, dataset) from MethodInfo.official
    # Shrinks data, model and epochs so a run finishes in well under a minute on 2 CPU cores (tests, CI).
    "smoke": {
        "backbone": {"name": "tvr-tiny"},
        # the default world (4 events, half described, hard negatives) at a fifth of its training size; on the
        # embedded default's frozen pretrained backbone every method starts well above chance, and 256 test
        # queries keep the seed-to-seed spread (what the CI baseline's tolerances come from) to a few points
        "data": {"synthetic": {"n_train": 128, "n_val": 32, "n_test": 256, "captions_per_video_train": 4}},
        "train": {"epochs": 8, "batch_size": 32, "lr": 1e-4},
        "eval": {"batch_size": 32, "chunk_size": 16},
        "cost": {"latency_min_run_time": 0.05},
    },
}


def deep_merge(base: dict, update: dict, *, path: str = "", strict: bool = False) -> dict:
    """Merge ``update`` into a copy of ``base``. With ``strict`` every key must already exist in ``base``."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        full = f"{path}{key}"
        if strict and key not in out:
            raise ConfigError(_unknown_key_message(full, base, path))
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, path=f"{full}.", strict=strict)
        else:
            out[key] = copy.deepcopy(value)
    return out


def flat_keys(cfg: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            keys.extend(flat_keys(v, f"{prefix}{k}."))
        else:
            keys.append(f"{prefix}{k}")
    return keys


def _unknown_key_message(full: str, base: dict, path: str) -> str:
    candidates = [f"{path}{k}" for k in base] if path else []
    hint = did_you_mean(full, candidates, cutoff=0.6)
    return f"unknown config key {full!r}.{hint}"


def parse_override(text: str, origin: str = "--set") -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"{origin} expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{origin} expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin} {key}: cannot parse value {raw!r}: {exc}") from exc
    return key, value


def apply_overrides(cfg: dict, overrides: list[str | tuple[str, str]]) -> tuple[dict, dict[str, Any]]:
    """Apply ``key=value`` overrides (a string from --set, or (text, origin)); returns (new config, {key: value} as
    applied)."""
    out = copy.deepcopy(cfg)
    applied: dict[str, Any] = {}
    all_keys = flat_keys(cfg)
    for item in overrides:
        # an item is "key=value" from --set, or ("key=value", origin) from a config file or a record
        text, origin = (item, "--set") if isinstance(item, str) else item
        key, value = parse_override(text, origin)
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if not isinstance(node, dict) or part not in node:
                hint = did_you_mean(key, all_keys, cutoff=0.6)
                raise ConfigError(f"unknown config key {key!r} in {origin}.{hint}")
            if last:
                if isinstance(node[part], dict) and node[part]:
                    raise ConfigError(f"{origin} {key}: is a section, set one of its keys instead")
                node[part] = coerce_raw(node[part], text.split("=", 1)[1], value)
                value = node[part]
            else:
                node = node[part]
        applied[key] = value
    return out, applied


def resolve_config(
    *,
    method_cls,
    dataset_cls,
    preset: str = "default",
    overrides: list[str | tuple[str, str]] | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[dict, dict[str, Any]]:
    if preset not in PRESETS:
        hint = did_you_mean(preset, PRESETS, n=2, cutoff=0.6)
        raise ConfigError(f"unknown preset {preset!r}.{hint} Available: {', '.join(PRESETS)}")
    cfg = copy.deepcopy(HARNESS_DEFAULTS)
    cfg = deep_merge(cfg, dataset_cls.config_defaults())  # datasets may add data.<name> sections
    cfg["method"] = copy.deepcopy(method_cls.default_options())
    if preset == "official":
        recipe = method_cls.info.official.get(dataset_cls.info.name)
        if recipe is None:
            known = ", ".join(sorted(method_cls.info.official)) or "none"
            raise ConfigError(f"--preset official: method {method_cls.info.name!r} has no official recipe for "
                              f"dataset {dataset_cls.info.name!r} (it has recipes for: {known})")
        cfg = deep_merge(cfg, recipe, strict=True)
        # the lineage's fp16 CLIP weights on CUDA; fp32 on a CPU (bench/precision.py says why)
        if "precision" not in recipe.get("train", {}):
            cfg["train"]["precision"] = official_precision(device)
    else:
        preset_cfg = copy.deepcopy(PRESETS[preset])
        # a preset's data.<dataset> section (smoke: data.synthetic) applies only to that dataset
        data = preset_cfg.get("data", {})
        for key in [k for k, v in data.items() if isinstance(v, dict) and k not in cfg["data"]]:
            del data[key]
        cfg = deep_merge(cfg, preset_cfg, strict=True)
    cfg, applied = apply_overrides(cfg, overrides or [])
    cfg["run"] = {"method": method_cls.info.name, "dataset": dataset_cls.info.name, "seed": seed,
                  "device": device, "preset": preset, "overrides": applied}
    validate_config(cfg)
    # method.* options: typed from the official defaults, checked here against the backbone's model config
    # (no weights, no data), so e.g. a seqTransf deeper than the text tower fails before any work
    cfg["method"] = check_section("method", cfg["method"], method_options_model(method_cls))
    method_cls.check_options(cfg["method"], architecture(cfg["backbone"]["name"]),
                             max_frames=cfg["data"]["max_frames"])
    return cfg, applied


def validate_config(cfg: dict) -> None:
    if cfg["train"].get("select_on") == "test":
        raise ConfigError("train.select_on='test' is refused: checkpoints are selected on a validation split")
    for name, model in SECTIONS.items():  # typed check; values converted in place (1e-4 -> float)
        cfg[name] = check_section(name, cfg[name], model)
    for key, val in cfg["run"]["overrides"].items():  # the recorded overrides hold the converted values
        node = cfg
        for part in key.split("."):
            node = node[part]
        cfg["run"]["overrides"][key] = node
    if cfg["eval"]["checkpoint"] is not None and cfg["train"]["epochs"] > 0:
        raise ConfigError(f"eval.checkpoint={cfg['eval']['checkpoint']!r} evaluates a trained checkpoint as it is; "
                          f"set train.epochs=0 (bench eval does), got train.epochs={cfg['train']['epochs']}")
    if cfg["train"]["precision"] == "amp" and not str(cfg["run"]["device"]).startswith("cuda"):
        raise ConfigError(f"train.precision='amp' needs a CUDA device (--device {cfg['run']['device']}); "
                          "use auto or fp32")
    d, t, e = cfg["data"], cfg["train"], cfg["eval"]
    if d["text_overflow"] not in ("error", "truncate"):
        raise ConfigError(f"data.text_overflow must be 'error' or 'truncate', got {d['text_overflow']!r}")
    for key, section in (("data.max_frames", d["max_frames"]), ("data.max_words", d["max_words"]),
                         ("train.batch_size", t["batch_size"]),
                         ("eval.batch_size", e["batch_size"]),
                         *((("eval.chunk_size", e["chunk_size"]),) if e["chunk_size"] is not None else ())):
        if not isinstance(section, int) or isinstance(section, bool) or section < 1:
            raise ConfigError(f"{key} must be a positive integer, got {section!r}")
    from tvr_bench.bench.units import parse_bytes  # raises ConfigError naming the key and the value

    if e["memory_budget"] is not None:
        parse_bytes(e["memory_budget"])
    parse_bytes(d["memory_cache_budget"], "data.memory_cache_budget")
    if d["max_words"] < 3:
        raise ConfigError("data.max_words must be >= 3 ([SOT], one token, [EOT])")
    if t["select_on"] == "test":
        raise ConfigError("train.select_on='test' is refused: checkpoints are selected on a validation split")
    if t["select_on"] not in ("val", "last"):
        raise ConfigError(f"train.select_on must be 'val' or 'last', got {t['select_on']!r}")
    if t["precision"] not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {t['precision']!r}")
    if e["tie_policy"] not in ("pessimistic", "optimistic", "mean"):
        raise ConfigError(f"eval.tie_policy must be pessimistic, optimistic or mean, got {e['tie_policy']!r}")
