"""The contracts between the harness and its plugins (lm-eval's ``api/``, mteb's ``abstasks/``).

Plugins under ``methods/`` and ``datasets/`` import these; the harness never imports a plugin module except
through the registry.
"""

from tvr_bench.bench.api.dataset import CaptionItem, DatasetPlugin, Split, VideoItem
from tvr_bench.bench.api.metadata import DatasetInfo, MethodInfo
from tvr_bench.bench.api.method import RetrievalMethod, State

__all__ = ["CaptionItem", "DatasetInfo", "DatasetPlugin", "MethodInfo", "RetrievalMethod", "Split", "State",
           "VideoItem"]
