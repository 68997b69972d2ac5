"""Error types: every user-facing failure is a ``BenchError`` whose message names the culprit.

The CLI turns a ``BenchError`` into a one-line message and a non-zero exit code (2 for bad input).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class BenchError(Exception):
    """A failure caused by the user's input or environment, reported without a traceback."""

    exit_code = 2


class ConfigError(BenchError):
    """Unknown config key, bad value, unknown method or dataset."""


class DataError(BenchError):
    """Missing, empty, corrupt or malformed data (videos, annotation files, captions)."""


class VideoError(DataError):
    """A video file that cannot be opened or decoded; the message names the file."""


class CaptionTooLongError(DataError):
    """A caption whose token count exceeds the text context and whose protocol forbids truncation."""


class RecordError(BenchError):
    """A run record that fails validation, or cannot be read."""


class OutputError(BenchError):
    """An output file that cannot be written (read-only place, a file where a folder is needed, disk full)."""


class RegressionError(BenchError):
    """``bench check`` found metrics that regressed beyond tolerance."""

    exit_code = 1


def did_you_mean(name: str, choices: Iterable[str], *, n: int = 3, cutoff: float = 0.5) -> str:
    """`` Did you mean: a, b?`` for the choices closest to a mistyped ``name``, or ``""``: the one phrasing
    of every unknown-name message (methods, datasets, presets, config keys, models, option values)."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=cutoff)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def read_user_text(path: Path, error: type[BenchError], prefix: str, what: str) -> str:
    """``path`` as UTF-8 text, or ``error`` with one line: ``<prefix>: <what> not found`` / ``cannot read``."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{prefix}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{prefix}: cannot read {what} ({exc})") from None
