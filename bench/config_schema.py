"""Typed sections of the resolved config (pydantic v2): every harness key has a type and, where it makes
sense, a range. The resolved config stays a plain nested dict (recorded as is); these models only check it
and convert ``--set`` strings to the declared type (``1e-4`` -> float, ``false`` -> bool)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, conlist, create_model, field_validator

from tvr_bench.bench.errors import ConfigError, did_you_mean

_METRICS = ("R@1", "R@5", "R@10", "MdR", "MnR", "RSum")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackboneCfg(_Section):
    name: str
    pretrained: Optional[str] = None
    # True: the backbone is not trained (every CLIP weight, logit scale included); its outputs are computed once
    # per split into the feature cache (bench/data/feature_cache.py) and the method's own modules train on them
    frozen: bool = False


class DataCfg(_Section):
    model_config = ConfigDict(extra="allow")  # data.<dataset> sections, checked by inference from defaults
    max_frames: int = Field(ge=1)
    max_words: int = Field(ge=3)  # [SOT], one token, [EOT]
    sample_fps: float = Field(gt=0)
    text_overflow: Literal["error", "truncate"]
    root: Optional[str] = None
    cache_dir: Optional[str] = None
    memory_cache: bool
    memory_cache_budget: Union[int, str] = "4GiB"  # bytes or '4GiB'; parsed by bench.units.parse_bytes
    allow_missing: bool


class TrainCfg(_Section):
    epochs: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    coef_lr: float = Field(ge=0)
    weight_decay: float = Field(ge=0)
    betas: conlist(float, min_length=2, max_length=2)
    eps: float = Field(gt=0)
    warmup_proportion: float = Field(ge=0, le=1)
    grad_clip: Optional[float] = Field(default=None, ge=0)
    optimizer: Literal["bertadam", "adamw"]
    precision: Literal["auto", "fp32", "amp", "fp16-clip"]
    num_workers: int = Field(ge=0)
    select_on: Literal["val", "last"]
    select_metric: str
    max_steps: Optional[int] = Field(default=None, ge=1)
    log_every: int = Field(ge=1)
    gather_backward: Optional[Literal["official", "exact"]] = None

    @field_validator("select_metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        valid = [f"{d}/{m}" for d in ("t2v", "v2t") for m in _METRICS]
        if v not in valid:
            raise ValueError(f"expected one of {', '.join(valid)}")
        return v


class EvalCfg(_Section):
    batch_size: int = Field(ge=1)
    chunk_size: Optional[int] = Field(default=None, ge=1)  # None: sized from memory_budget
    memory_budget: Optional[Union[int, str]] = None  # bytes or '2GB'; parsed by bench.evaluate.parse_bytes
    tie_policy: Literal["pessimistic", "optimistic", "mean"]
    checkpoint: Optional[str] = None
    checkpoint_format: Literal["auto", "tvr-bench", "official"] = "auto"


class CostCfg(_Section):
    enabled: bool
    flops_block: conlist(int, min_length=2, max_length=2)
    latency_gallery: Optional[int] = Field(default=None, ge=1)
    latency_min_run_time: float = Field(gt=0)


SECTIONS: dict[str, type[BaseModel]] = {"backbone": BackboneCfg, "data": DataCfg, "train": TrainCfg,
                                        "eval": EvalCfg, "cost": CostCfg}


def _one_line(prefix: str, section: dict, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
    key = f"{prefix}.{loc}" if loc else prefix
    value = err.get("input")
    msg = err["msg"].replace("Value error, ", "")
    hint = ""
    if isinstance(value, str):
        choices = {"bool_parsing": ["true", "false"]}.get(err["type"])
        if err["type"] == "literal_error":
            choices = [str(c) for c in err.get("ctx", {}).get("expected", "").replace("'", "").replace(" or ", ", ").split(", ")]
        hint = did_you_mean(value.lower(), choices or [], n=1)
    return f"{key}={value!r}: {msg}.{hint}"


def check_section(prefix: str, section: dict, model: type[BaseModel]) -> dict:
    """Validate ``section`` against ``model``; returns it with values converted to the declared types (key order
    kept). A bad value is one :class:`ConfigError` line naming the key, the value and what is accepted."""
    try:
        typed = model.model_validate(section).model_dump()
    except ValidationError as exc:
        raise ConfigError(_one_line(prefix, section, exc)) from None
    return {k: typed.get(k, v) for k, v in section.items()}


def coerce_raw(current: Any, raw: str, value: Any) -> Any:
    """A ``--set`` value for a key whose current value is ``current``: strings stay the raw text (YAML would turn
    ``no`` into False) unless quoted, numbers/bools are left to the model's conversion (``1e-4`` YAML-loads as a string)."""
    text = raw.strip()
    if isinstance(value, str) and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return value  # an explicitly quoted string: the quotes are syntax, not part of the value
    if isinstance(current, str) and text.lower() not in ("null", "none", "~", ""):
        return raw
    if isinstance(value, str) and value.lower() in ("none", "null"):
        return None
    return value


def method_options_model(method_cls) -> type[BaseModel]:
    """A typed model of a method's ``method.*`` options, from the types of its official defaults: booleans stay
    booleans (``Flase`` is refused), counts are non-negative integers, weights/temperatures/rates are finite
    non-negative numbers, strings stay strings; a method's ``OPTION_TYPES`` narrow that (choices, bounds).
    Unknown keys are refused."""
    fields: dict[str, Any] = {}
    for key, default in method_cls.default_options().items():
        if key in method_cls.OPTION_TYPES:
            typ: Any = method_cls.OPTION_TYPES[key]
        elif isinstance(default, bool):
            typ = bool
        elif isinstance(default, int):
            typ = Annotated[int, Field(ge=0, strict=True)]
        elif isinstance(default, float):
            typ = Annotated[float, Field(ge=0, allow_inf_nan=False)]
        elif isinstance(default, str):
            typ = Annotated[str, Field(strict=True)]
        else:
            typ = Any
        fields[key] = (typ, default)
    return create_model(f"{method_cls.info.name}_options", __config__=ConfigDict(extra="forbid"), **fields)
