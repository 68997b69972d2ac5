"""Lazy plugin registries for methods and datasets.

A plugin is one module under ``methods/`` or ``datasets/`` that defines a class decorated with
``@register_method`` / ``@register_dataset``. Listing names only scans module files (no import of torch-heavy
code beyond the plugin modules themselves); third-party plugins can register through the entry-point groups
``tvr_bench.methods`` and ``tvr_bench.datasets``. Unknown names answer with "did you mean".
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata as importlib_metadata
from typing import Generic, TypeVar

from tvr_bench.bench.api.metadata import DatasetInfo, MethodInfo  # noqa: F401 - re-exported for plugins
from tvr_bench.bench.errors import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, entry_point_group: str):
        self.kind = kind
        self.package = package
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, obj: T) -> T:
        if name in self._items and self._items[name] is not obj:
            raise ConfigError(f"duplicate {self.kind} name {name!r}: {self._items[name]!r} and {obj!r}")
        self._items[name] = obj
        return obj

    def _load_all(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")
        for ep in importlib_metadata.entry_points(group=self.entry_point_group):
            ep.load()

    def names(self) -> list[str]:
        self._load_all()
        return sorted(self._items)

    def get(self, name: str) -> T:
        self._load_all()
        if name not in self._items:
            hint = did_you_mean(name, self._items)
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def parse_list(self, spec: str) -> list[str]:
        """Comma list (``a,b``) or ``all`` -> validated names, order kept."""
        if spec.strip() == "all":
            return self.names()
        names = [s.strip() for s in spec.split(",") if s.strip()]
        if not names:
            raise ConfigError(f"empty {self.kind} list")
        for n in names:
            self.get(n)
        return names


METHODS: Registry = Registry("method", "tvr_bench.methods", "tvr_bench.methods")
DATASETS: Registry = Registry("dataset", "tvr_bench.datasets", "tvr_bench.datasets")


def register_method(cls):
    """Class decorator: the class carries ``info: MethodInfo``."""
    METHODS.register(cls.info.name, cls)
    return cls


def register_dataset(cls):
    DATASETS.register(cls.info.name, cls)
    return cls
