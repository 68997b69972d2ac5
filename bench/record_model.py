"""The run record as a typed model (pydantic): the one definition of the schema.

``bench/records.py`` validates every record with it on write and on read, and ``bench schema`` writes its JSON
Schema (also shipped as ``bench/record.schema.json``), so tools outside Python can validate records too.
Extra keys are allowed everywhere (``extra="allow"``): only the keys below are checked. Numbers must be finite.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, field_validator,
                      model_validator)

# 2: run records keep the per-query ranks (metrics.ranks); version-1 records stay readable, without intervals
SCHEMA_VERSION = 2
SCHEMA_FILE = Path(__file__).with_name("record.schema.json")

# strict types: "60" is not a number, True is not an integer; NaN and inf are refused (allow_inf_nan=False)
Num = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # strict floats accept ints, not "60"
NonNegNum = Annotated[Num, Field(ge=0)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
Percent = Annotated[Num, Field(ge=0, le=100)]
Rank = Annotated[Num, Field(ge=1, description="1-based rank")]
NonEmpty = Annotated[StrictStr, Field(min_length=1, pattern=r"\S")]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class RankBlock(_Open):
    """Retrieval metrics of one direction (percent recalls, 1-based ranks)."""

    R1: Percent = Field(alias="R@1")
    R5: Percent = Field(alias="R@5")
    R10: Percent = Field(alias="R@10")
    MdR: Rank
    MnR: Rank
    RSum: Num = Field(description="R@1 + R@5 + R@10 (checked to 1e-6)")

    @model_validator(mode="after")
    def _consistent(self) -> "RankBlock":
        if not self.R1 <= self.R5 <= self.R10:
            raise ValueError(f"recalls not monotone: R@1={self.R1:g}, R@5={self.R5:g}, R@10={self.R10:g} "
                             "(need R@1 <= R@5 <= R@10)")
        if abs(self.RSum - (self.R1 + self.R5 + self.R10)) > 1e-6:
            raise ValueError(f"RSum {self.RSum:g} != R@1+R@5+R@10 = {self.R1 + self.R5 + self.R10:g}")
        return self


class Directions(_Open):
    t2v: RankBlock
    v2t: RankBlock


class EncodedRanks(_Open):
    """Per-query ranks as ``bench/rank_codec.py`` writes them (2 x rank, zlib + base64)."""

    encoding: Literal["zlib+base64"]
    dtype: Literal["<u2", "<u4"]
    scale: Literal[2]
    n: Annotated[StrictInt, Field(ge=1)]
    data: StrictStr


class RankVectors(_Open):
    t2v: EncodedRanks
    v2t: EncodedRanks


class Metrics(Directions):
    last_epoch: Optional[Directions] = None
    selection: Optional[StrictStr] = None
    conventions: Optional[dict[str, Any]] = None
    ranks: Optional[RankVectors] = Field(
        default=None, description="per-query ranks of the reported evaluation (schema 2); the metrics must "
        "follow from them")

    @model_validator(mode="after")
    def _ranks_match_metrics(self) -> "Metrics":
        if self.ranks is None:
            return self
        from tvr_bench.bench.metrics import summarize_ranks
        from tvr_bench.bench.rank_codec import decode_ranks

        for direction in ("t2v", "v2t"):
            try:
                ranks = decode_ranks(getattr(self.ranks, direction).model_dump())
            except ValueError as exc:
                raise ValueError(f"ranks.{direction}: {exc}") from None
            n_queries = (self.model_extra or {}).get("n_queries")
            if isinstance(n_queries, dict) and n_queries.get(direction) not in (None, ranks.size):
                raise ValueError(f"ranks.{direction} holds {ranks.size} ranks for {n_queries[direction]} queries")
            recorded = getattr(self, direction).model_dump(by_alias=True)
            for key, value in summarize_ranks(ranks).items():
                if abs(value - recorded[key]) > 1e-6 * max(1.0, abs(value)):
                    raise ValueError(f"ranks.{direction} give {key} = {value:g}, the record says "
                                     f"{recorded[key]:g}: the ranks are not this evaluation's")
        return self


class Params(_Open):
    total: NonNegInt
    trainable: NonNegInt
    head: NonNegInt

    @model_validator(mode="after")
    def _trainable_le_total(self) -> "Params":
        if self.trainable > self.total:
            raise ValueError(f"trainable {self.trainable} > total {self.total}")
        return self


class Flops(_Open):
    text_per_query: NonNegNum
    score_per_pair: NonNegNum = Field(description="FlopCounterMode's count of this implementation's scoring, "
                                      "per (text, video) pair")
    per_query: NonNegNum
    video_per_video: NonNegNum
    gallery_size: NonNegNum
    convention: Optional[StrictStr] = None
    official_score_per_pair: Optional[NonNegNum] = Field(
        default=None, description="analytic FLOPs per pair of the method's official evaluation code (its own "
        "eval block, per-block re-work amortised; same 2 x MAC matmul convention), not a count of this "
        "implementation; absent where the method declares none")


class Memory(_Open):
    peak_bytes: NonNegInt
    kind: Literal["cuda_allocated_peak", "cpu_peak_rss"]


class Latency(_Open):
    """Named latency figures in ms (median, iqr, ...); other extras (counts, sizes, notes) are free."""

    @model_validator(mode="after")
    def _numbers_non_negative(self) -> "Latency":
        extras = self.model_extra or {}
        if not extras:
            raise ValueError("empty object")
        for k, v in extras.items():
            if isinstance(v, (dict, list, str)) or v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0 or v in (float("inf"),):
                raise ValueError(f"{k}: expected a number >= 0, got {v!r}")
        return self


class Cost(_Open):
    params: Params
    flops: Flops
    memory: Memory
    latency_ms: Union[NonNegNum, dict[str, Any]] = Field(description="ms; a number or named figures (Latency)")
    device: NonEmpty

    @field_validator("latency_ms")
    @classmethod
    def _latency(cls, v: Any) -> Any:
        if isinstance(v, dict):
            Latency.model_validate(v)
        return v


class Provenance(_Open):
    git_sha: Optional[StrictStr]
    git_dirty: Optional[StrictBool]
    packages: dict[str, Any]
    device: StrictStr
    command: Union[StrictStr, list[StrictStr]]
    started_at: datetime
    finished_at: datetime


class Protocol(_Open):
    fingerprint: Optional[StrictStr] = None


class LatencyRow(_Open):
    gallery_size: Annotated[StrictInt, Field(gt=0)]
    status: Literal["measured", "skipped"]
    median_ms: Optional[NonNegNum] = None
    extrapolated_ms: Optional[NonNegNum] = None
    reason: Optional[StrictStr] = None

    @model_validator(mode="after")
    def _no_silent_gap(self) -> "LatencyRow":
        if self.status == "measured" and self.median_ms is None:
            raise ValueError("a measured size needs median_ms")
        if self.status == "skipped" and (not (self.reason or "").strip() or self.extrapolated_ms is None):
            raise ValueError("a skipped size must say why (reason) and give extrapolated_ms")
        return self


class EfficiencyLatency(_Open):
    by_gallery: Annotated[list[LatencyRow], Field(min_length=1)]


class Efficiency(_Open):
    latency: EfficiencyLatency


class Precision(_Open):
    """``train.precision`` and what it resolved to on the run's device (bench/precision.py)."""

    setting: Literal["auto", "fp32", "amp", "fp16-clip"]
    used: Literal["fp32", "amp", "fp16-clip"]
    note: Optional[StrictStr] = None


class EvaluatedCheckpoint(_Open):
    """The file ``bench eval --checkpoint`` evaluated."""

    path: NonEmpty
    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
    format: Literal["tvr-bench", "official"] = Field(
        default="tvr-bench", description="a tvr-bench best.pt/last.pt, or a state dict saved by the method's "
                                         "official code (mapped by bench/checkpoints/official.py)")
    official_family: Optional[StrictStr] = None


class Training(_Open):
    """How the run was trained; the multi-process facts default to a single process (older records)."""

    precision: Optional[Precision] = Field(default=None, description="absent in records older than the field")
    evaluated_checkpoint: Optional[EvaluatedCheckpoint] = None

    world_size: Annotated[StrictInt, Field(ge=1, description="processes (torchrun ranks) that trained")] = 1
    global_batch: Optional[Annotated[StrictInt, Field(ge=1, description="batch scored per step, all ranks")]] = None
    per_rank_batch: Optional[Annotated[StrictInt, Field(ge=1, description="global_batch / world_size")]] = None
    gather_backward: Optional[Literal["official", "exact"]] = Field(
        default=None, description="gradient the all-gather passed back (train.gather_backward); None: one process")
    backbone: Optional[Literal["frozen", "trained"]] = Field(
        default=None, description="backbone.frozen: trained with the method, or frozen (heads on cached features)")
    backbone_weights: Optional[dict[str, Optional[str]]] = Field(
        default=None, description="backbone.pretrained and the sha256 of its file (None: random init or an "
        "open_clip tag)")
    feature_cache: Optional[dict[str, dict[str, str]]] = Field(
        default=None, description="frozen backbone: the feature-cache folders (text, video) of each split")


class RunRecord(_Open):
    """One JSON file per (method, dataset, seed): metrics, cost, config and provenance of one run."""

    schema_version: Literal[1, 2]
    method: NonEmpty
    dataset: NonEmpty
    seed: StrictInt
    kind: Literal["run", "cost", "efficiency"]
    metrics: Optional[Metrics]
    cost: Cost
    config: dict[str, Any]
    provenance: Provenance
    protocol: Optional[Protocol] = None
    training: Optional[Training] = None
    efficiency: Optional[Efficiency] = None

    @model_validator(mode="before")
    @classmethod
    def _metrics_null_for_efficiency(cls, data: Any) -> Any:
        # checked before the fields, so a non-null metrics object of an efficiency record is named as such
        if isinstance(data, dict) and data.get("kind") == "efficiency" and data.get("metrics") is not None:
            raise ValueError('metrics: must be null when kind is "efficiency" (cost only, no training)')
        return data

    @model_validator(mode="after")
    def _kind_rules(self) -> "RunRecord":
        if self.metrics is None and self.kind == "run":
            raise ValueError('metrics: null is only allowed when kind is "cost" or "efficiency"')
        if self.kind == "efficiency":
            if self.efficiency is None:
                raise ValueError("efficiency: missing (required when kind is \"efficiency\")")
        return self


def _loc(loc: tuple) -> str:
    parts = []
    for p in loc:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        elif p in ("function-after[_consistent()]",) or str(p).startswith(("function-", "union[", "json-or-python")):
            continue
        elif str(p) in ("float", "constrained-float", "str", "list[str]", "dict[str,any]"):
            continue  # union member tags
        else:
            parts.append(str(p))
    return ".".join(parts) or "(record)"


def record_problems(rec: Any) -> list[str]:
    """Every schema problem of ``rec`` as ``json.path: message``; ``[]`` when valid."""
    if not isinstance(rec, dict):
        return [f"(record): expected a JSON object, got {'null' if rec is None else type(rec).__name__}"]
    try:
        RunRecord.model_validate(rec)
    except ValidationError as exc:
        out, seen = [], set()
        for err in exc.errors(include_url=False):
            path = _loc(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = "missing"
            elif "input" in err and err["type"] not in ("value_error",):
                msg = f"{msg} (got {err['input']!r})"
            line = msg if path == "(record)" and ": " in msg else f"{path}: {msg}"
            if path not in seen:  # a union reports one error per member; keep the first per path
                seen.add(path)
                out.append(line)
        return out
    return []


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a run record, generated from :class:`RunRecord`."""
    schema = RunRecord.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://tvr-bench/record.schema.json"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=1, sort_keys=True) + "\n"
