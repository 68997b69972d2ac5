"""The image-caption corpus ``bench pretrain`` trains the tiny CLIP on: the embedded world's events, drawn apart
from any benchmark video.

What an item is. One or two events of the world (``datasets/_synthetic_world.py``: its event pool, its drawing
``render_event_frames``, its caption phrasing ``_caption_text``) and a caption that describes exactly those events,
in order. Each event is shown by ONE frame, so an item is a single image (one event, most items) or a short strip
of two images (two events, ``strip_rate`` of the items) whose caption joins the two events with one of the
benchmark's connectors ("..., then ..."). Image and caption always agree: nothing is described that is not shown,
nothing is shown that is not described. The strips are there so the text tower meets the connectors and learns
that a two-event caption goes with the mean of its two events' frames, which is how meanP (and the harness's
two-tower methods) pool a video; the trainer pools a strip that way (``bench/pretrain.py``).

What a frame looks like. An event is drawn at the benchmark's frame size for one event's length in frames
(``seconds_per_event * fps``, 64 px and 8 frames at the defaults) but at twice the temporal resolution, and the
frame kept is a quarter of a frame's duration before or after a frame that the harness's 1-fps sampling keeps from
a benchmark video (``bench/data/video.py`` ``sample_frame_indices``). So a corpus frame shows a moving shape where
the sampled video frames show it, give or take 1/16 s at 4 fps (that is what makes "left" and "right" learnable
from one frame), yet never at a time a benchmark frame is drawn at. The frames then go through the backbone's own
eval preprocess the way the harness treats decoded video frames (``bench/data/frame_cache.py`` ``Preprocessor``:
``crop`` now, ``to_clip`` when a batch is built). What the corpus does not reproduce is the video codec: its
frames never went through x264 and yuv420, the benchmark's do.

Apart from the benchmark by derivation, not pixel by pixel. The world is small and drawn on a 64-px grid, so a
frame drawn independently can still rasterise to the very pixels of some benchmark frame (e.g. a shape moving up,
caught where a pulsing one of the same shape and colours sits). Against the default benchmark (seed 0, 900
videos, 25,486 distinct drawn frames) 78 of the default corpus's 33,527 frames coincide so (0.2 %, 15 of them
pulsing shapes); ``tests/test_pretrain.py`` checks that none does for a small generated benchmark.

Random streams. Item ``i`` draws everything from ``SeedSequence([seed, CORPUS_STREAM, i, purpose])``. The
benchmark's streams are ``[seed, split, video, purpose]`` with split codes 1-3, so no corpus stream is a stream
of the benchmark for any seed. The corpus depends on its seed and parameters only, never on a benchmark's.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from tvr_bench.bench.data.video import sample_frame_indices
from tvr_bench.bench.errors import ConfigError
from tvr_bench.datasets._synthetic_world import (
    _CONNECTORS,
    _EVENT_TEMPLATES,
    _MOTION_WORDS,
    _POOL,
    Event,
    _caption_text,
    render_event_frames,
)

__all__ = ["CORPUS_STREAM", "CorpusParams", "Corpus", "build_corpus", "corpus_items", "render_item_frames"]

#: the second entry of every corpus stream's key: not a split code of the benchmark (1, 2, 3)
CORPUS_STREAM = 1000
_PICK, _CAPTION, _RENDER = 1, 2, 3  # purposes of an item's streams
_N_STYLES = len(_EVENT_TEMPLATES) * len(_MOTION_WORDS) * len(_CONNECTORS)


@dataclass(frozen=True)
class CorpusParams:
    seed: int = 0
    n_items: int = 24000
    strip_rate: float = 0.4  # share of two-event items
    frame_size: int = 64  # the benchmark's (data.synthetic.frame_size)
    seconds_per_event: int = 2  # the benchmark's, and its fps: where the sampled frames of an event fall
    fps: int = 4

    def check(self) -> "CorpusParams":
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"pretrain corpus: {message}")

        need(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        need(self.n_items >= 1, f"n_items must be >= 1, got {self.n_items}")
        need(0.0 <= self.strip_rate <= 1.0, f"strip_rate must be in [0, 1], got {self.strip_rate}")
        need(self.frame_size >= 16 and self.frame_size % 2 == 0,
             f"frame_size must be an even number >= 16, got {self.frame_size}")
        need(self.seconds_per_event >= 1 and self.fps >= 1, "seconds_per_event and fps must be >= 1")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


def _sampled_slots(p: CorpusParams) -> list[int]:
    """Which of an event's frames the harness's 1-fps sampling keeps (every event lasts whole seconds, so the
    same slots in every event of a benchmark video)."""
    return sorted(set(sample_frame_indices(p.seconds_per_event * p.fps, float(p.fps))))


def corpus_items(p: CorpusParams) -> list[tuple[list[Event], str]]:
    """The items' events and captions, without drawing any frame (cheap)."""
    p.check()
    items = []
    for i in range(p.n_items):
        pick = _rng(p.seed, CORPUS_STREAM, i, _PICK)
        n_events = 2 if pick.random() < p.strip_rate else 1
        events = [_POOL[int(j)] for j in pick.choice(len(_POOL), size=n_events, replace=False)]
        style = int(_rng(p.seed, CORPUS_STREAM, i, _CAPTION).integers(_N_STYLES))
        template, rest = divmod(style, len(_MOTION_WORDS) * len(_CONNECTORS))
        words, connector = divmod(rest, len(_CONNECTORS))
        items.append((events, _caption_text(events, template, words, connector)))
    return items


def render_item_frames(p: CorpusParams, i: int, events: list[Event]) -> np.ndarray:
    """uint8 ``[len(events), size, size, 3]``: one frame per event, a quarter frame off a sampled one."""
    rng = _rng(p.seed, CORPUS_STREAM, i, _RENDER)
    slots = _sampled_slots(p)
    n_fine = 2 * p.seconds_per_event * p.fps  # twice the benchmark's temporal resolution
    frames = []
    for event in events:
        slot = slots[int(rng.integers(len(slots)))]
        fine = 2 * slot + int(rng.integers(2))  # frame f is fine frames 2f, 2f+1: a quarter frame off it
        frames.append(render_event_frames(event, n_fine, p.frame_size, rng)[fine])
    return np.stack(frames)


@dataclass
class Corpus:
    """``images``: uint8 ``[n_frames, S, S, 3]`` after the backbone's crop; item ``k`` is the frames
    ``starts[k]:starts[k + 1]``; ``captions[k]`` its text."""
    params: CorpusParams
    images: np.ndarray
    starts: np.ndarray
    captions: list[str]

    def __len__(self) -> int:
        return len(self.captions)

    def fingerprint(self) -> str:
        """sha256 of the pixels, item boundaries and captions (what the tests and the manifest compare)."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(self.starts.astype("<i8").tobytes())
        h.update("\n".join(self.captions).encode("utf-8"))
        return h.hexdigest()


def build_corpus(p: CorpusParams, preprocessor, *, progress=None) -> Corpus:
    """Draw every item and apply ``preprocessor.crop`` (a ``bench/data/frame_cache.py`` ``Preprocessor`` of the
    backbone that will be trained). ``progress`` (a bar) is advanced once per item."""
    if not preprocessor.splittable:
        raise ConfigError("pretrain corpus: the backbone's preprocess cannot be split into crop + normalise")
    images, starts, captions = [], [0], []
    for i, (events, caption) in enumerate(corpus_items(p)):
        images.append(preprocessor.crop(render_item_frames(p, i, events)))
        starts.append(starts[-1] + len(events))
        captions.append(caption)
        if progress is not None:
            progress.update(1)
    return Corpus(p, np.concatenate(images), np.asarray(starts, dtype=np.int64), captions)
