"""Published numbers with provenance, kept apart from anything the toolkit measures.

Transcribed from docs/published.md, which tags every number:

- ``V`` read from an official repository (README, code or a results-table image in it);
- ``S`` copied from another paper's comparison table (the citing paper is named);
- ``P`` stated in the method's own paper text;
- ``R`` unverified recollection of a paper: kept so that nobody re-enters it as a fact, but **never shown as
  published** (``shown`` is False) unless a caller asks for unverified numbers, and then labelled so;
- ``A`` analytic estimate from tensor shapes (cost tables only).

Where one row mixes tags (e.g. R@1-R@10 [V] but MdR/MnR [R]) the row is split so that each entry carries one tag.
Method names are this toolkit's registry names; ``PUBLISHED_BY_METHOD`` is what ``MethodInfo.published`` holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

CITABLE_TAGS = ("V", "S", "P")
TAG_MEANING = {
    "V": "official repository",
    "S": "another paper's table",
    "P": "the method's own paper text",
    "R": "unverified recollection (not citable)",
    "A": "analytic estimate",
}


@dataclass(frozen=True)
class PublishedResult:
    method: str
    dataset: str  # registry name: msrvtt (1k-A, 9k train), didemo (paragraph), vatex (HGR, multi-caption)
    tag: str
    source: str
    t2v: Mapping[str, float] = field(default_factory=dict)  # subset of R@1, R@5, R@10, MdR, MnR
    v2t: Mapping[str, float] = field(default_factory=dict)
    backbone: str = "ViT-B/32"
    variant: str = ""  # non-empty when the row is not the default configuration (e.g. post-processed)
    note: str = ""

    def __post_init__(self) -> None:
        if self.tag not in TAG_MEANING or self.tag == "A":
            raise ValueError(f"published result for {self.method}/{self.dataset}: bad tag {self.tag!r}")

    @property
    def shown(self) -> bool:
        """Citable as published: tag V, S or P."""
        return self.tag in CITABLE_TAGS

    def label(self) -> str:
        return f"[{self.tag}] {self.source}"


@dataclass(frozen=True)
class PublishedCost:
    """A published or analytic cost figure for a method's similarity head (MSR-VTT 1k-A, ViT-B/32)."""

    method: str
    quantity: str  # e.g. "head FLOPs, 1k x 1k matrix"
    value: float
    unit: str  # what the number counts, as far as it is known
    tag: str
    source: str
    note: str = ""


def _r(method, dataset, tag, source, t2v, v2t=None, **kw) -> PublishedResult:
    keys = ("R@1", "R@5", "R@10", "MdR", "MnR")

    def block(values):
        if values is None:
            return {}
        return {k: float(v) for k, v in zip(keys, values) if v is not None}

    return PublishedResult(method=method, dataset=dataset, tag=tag, source=source, t2v=block(t2v), v2t=block(v2t), **kw)


PUBLISHED_RESULTS: tuple[PublishedResult, ...] = (
    # ---- MSR-VTT 1k-A, trained on 9k ----
    _r("meanp", "msrvtt", "V", "CenterCLIP Tab. 3", (43.1, 70.4, 80.8, 2, 16.2), (43.1, 70.5, 81.2, 2, 12.4)),
    _r("meanp", "msrvtt", "V", "CenterCLIP Tab. 3 (quoting CLIP4Clip)", (31.2, 53.7, 64.2, 4, None),
       (27.2, 51.7, 62.6, 5, None), variant="CLIP zero-shot (pretrained weights, epochs 0)"),
    _r("seqtransf", "msrvtt", "V", "CenterCLIP Tab. 3 and GLSCL Tab. I", (44.5, 71.4, 81.6, 2.0, 15.3),
       (42.7, 70.9, 80.6, 2.0, 11.6)),
    _r("tighttransf", "msrvtt", "R", "CLIP4Clip paper (unverified)", (40.2, 71.5, 80.5, 2.0, 13.4)),
    _r("xpool", "msrvtt", "V", "GLSCL Tab. I (R@1 also in the X-Pool README)", (46.9, 72.8, 82.2, 2.0, 14.3),
       (44.4, 73.3, 84.0, 2.0, 9.0)),
    _r("xpool", "msrvtt", "V", "X-Pool README", (43.9,), variant="trained on 7k"),
    _r("xclip", "msrvtt", "V", "GLSCL Tab. I", (46.1, 73.0, 83.1, 2.0, 13.2), (46.8, 73.3, 84.0, 2.0, 9.1)),
    _r("ts2net", "msrvtt", "V", "TS2-Net README (R@1-R@10) and GLSCL Tab. I", (47.0, 74.5, 83.8, 2.0, 13.0),
       (45.3, 74.1, 83.7, 2.0, 9.2)),
    _r("ts2net", "msrvtt", "V", "TS2-Net README", (51.1, 76.9, 85.6), variant="+ inverted softmax (post-processed)"),
    _r("drl", "msrvtt", "V", "DRL README (new hyperparameters)", (47.6, 73.4, 83.3, 2.0, 12.8),
       (45.1, 72.9, 83.5, 2.0, 9.2), variant="WTI + seqTransf + CDCR"),
    _r("drl", "msrvtt", "V", "DRL README", (44.8, 73.0, 82.2, 2.0, 13.4), (42.6, 72.7, 82.8, 2.0, 9.1),
       variant="TI + seqTransf (method.interaction=ti, no CDCR)"),
    _r("drl", "msrvtt", "S", "TAME Tab. 1 (DRL paper row)", (47.4, 74.6, 83.8, 2.0)),
    _r("drl", "msrvtt", "R", "DRL paper (unverified)", None, (45.3, 73.9, 83.3, 2.0)),
    # ---- DiDeMo paragraph-to-video ----
    _r("meanp", "didemo", "S", "STAN table", (43.4, 70.2, 80.6, 2.0)),
    _r("meanp", "didemo", "R", "CLIP4Clip paper (unverified)", (None, None, None, None, 17.5)),
    _r("seqtransf", "didemo", "V", "GLSCL Tab. II", (42.8, 68.5, 79.2, None, 18.9), (41.4, 68.2, 79.1, None, 12.4)),
    _r("tighttransf", "didemo", "R", "CLIP4Clip paper (unverified)", (25.8, 52.8, 66.3, 5.0, 27.3)),
    _r("xclip", "didemo", "V", "GLSCL Tab. II", (45.2, 74.0, None, None, 14.6), (43.1, 72.2, None, None, 10.9)),
    _r("ts2net", "didemo", "V", "TS2-Net README and GLSCL Tab. II", (41.8, 71.6, 82.0, None, 14.8)),
    _r("drl", "didemo", "R", "DRL paper (unverified)", (47.9, 73.8, 82.7, 2.0)),
    # ---- VATEX, HGR split, multi-caption ----
    _r("ts2net", "vatex", "V", "TS2-Net README", (59.1, 90.0, 95.2)),
    _r("ts2net", "vatex", "R", "TS2-Net paper (unverified)", (None, None, None, 1.0, 3.5)),
    _r("drl", "vatex", "R", "DRL paper (unverified)", (63.5, 91.7, 96.5, 1.0)),
    _r("meanp", "vatex", "R", "re-runs in later papers (unverified)", (55.9, 89.2, 95.0, 1.0, 3.9),
       variant="CLIP4Clip re-run"),
)
# GLCCL: the GLCCL paper holds no transcribed GLCCL number (its tables are images); none is invented here.


PUBLISHED_COSTS: tuple[PublishedCost, ...] = (
    # GLSCL Table I: "FLOPs" of the similarity head; the entries equal MACs over the whole 1k x 1k matrix for
    # CLIP4Clip (1000*1000*512) and TS2-Net (x12 frames), so the column is read as MACs per 1k x 1k (docs/published.md, costs).
    PublishedCost("meanp", "head FLOPs, 1k x 1k matrix", 0.5e9, "reported 'FLOPs'; matches MACs", "V", "GLSCL Tab. I"),
    PublishedCost("seqtransf", "head FLOPs, 1k x 1k matrix", 0.5e9, "reported 'FLOPs'; matches MACs", "V",
                  "GLSCL Tab. I (row 'CLIP4Clip')"),
    PublishedCost("xclip", "head FLOPs, 1k x 1k matrix", 220.9e9, "reported 'FLOPs'; close to analytic MACs", "V",
                  "GLSCL Tab. I"),
    PublishedCost("ts2net", "head FLOPs, 1k x 1k matrix", 6.1e9, "reported 'FLOPs'; matches MACs", "V", "GLSCL Tab. I"),
    PublishedCost("xpool", "head FLOPs, 1k x 1k matrix", 275.0e9, "reported 'FLOPs'; about half the analytic MACs",
                  "V", "GLSCL Tab. I"),
    PublishedCost("meanp", "training GPU memory (2 x V100)", 20.8e9, "bytes (GB as printed)", "V", "CenterCLIP Tab. 3(b)"),
    PublishedCost("meanp", "inference time per video (V100)", 24.4e-3, "seconds", "V", "CenterCLIP Tab. 3(b)"),
)

# docs/published.md (analytic head MACs): analytic MACs of the similarity head for the MSR-VTT 1k-A matrix (N_t = N_v = 1000, F = 12,
# L = 32, D = 512). The cross-check for the counted FLOPs (counted FLOPs = 2 x MACs).
ANALYTIC_HEAD_MACS_1K: dict[str, PublishedCost] = {
    name: PublishedCost(name, "head MACs, 1k x 1k matrix", value, "MACs", "A", "docs/published.md (analytic head MACs)", note)
    for name, value, note in (
        ("meanp", 0.512e9, "one D-dim dot product per pair"),
        ("seqtransf", 0.512e9, "cosine only; the temporal transformer is video-side (offline)"),
        ("ts2net", 6.1e9, "F x D per pair"),
        ("textpool", 12.8e9, "logits + weighted sum + cosine as written; ~6.3 G with the Gram-matrix trick"),
        ("drl", 197e9, "L x F x D per pair"),
        ("xclip", 238e9, "dominated by the word x frame matrix"),
        ("xpool", 543e9, "2 D^2 of post-pooling projections per pair"),
        ("glccl", 963e9, "33 guided poolings per pair plus an L x L x D matrix"),
        ("tighttransf", 164e12, "4-layer, 13-token cross encoder per pair"),
    )
}


def published_for(method: str, dataset: str | None = None, *, include_unverified: bool = False
                  ) -> list[PublishedResult]:
    out = []
    for r in PUBLISHED_RESULTS:
        if r.method != method or (dataset is not None and r.dataset != dataset):
            continue
        if r.shown or include_unverified:
            out.append(r)
    return out


