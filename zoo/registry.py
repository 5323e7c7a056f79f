"""One generic registry for everything the zoo looks up by name: models, data sets, protocols, tasks.

A :class:`Registry` maps names to objects. Entries are added with :meth:`Registry.register`
(a decorator or a plain call) by the module that defines them; a registry may be given a
``discover`` function that imports those modules the first time a name is looked up, so that
nothing is imported before it is needed. An unknown name raises :class:`UnknownNameError` with the
closest known names.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, Iterable, TypeVar, overload

from zoo.errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, known: Iterable[str], cutoff: float = 0.5) -> str:
    """``" Did you mean a, b?"`` for the known names close to ``name``, or ``""``."""
    close = difflib.get_close_matches(str(name), list(known), n=3, cutoff=cutoff)
    return f" Did you mean {', '.join(close)}?" if close else ""


def import_submodules(package: str, suffix: str = "", packages_only: bool = False) -> None:
    """Import every module of ``package`` (``package.<name>`` + ``suffix``): the discovery of a registry."""
    root = importlib.import_module(package)
    for module in pkgutil.iter_modules(root.__path__):
        if packages_only and not module.ispkg:
            continue
        importlib.import_module(f"{package}.{module.name}{suffix}")


class Registry(Generic[T]):
    """Named objects of one kind (``kind`` is used in messages, e.g. ``"model"``)."""

    def __init__(self, kind: str, discover: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._discover = discover
        self._discovered = discover is None
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: T | None = None) -> T | Callable[[T], T]:
        """Add ``obj`` under ``name`` (or, without ``obj``, return a decorator that does)."""
        def add(value: T) -> T:
            if name in self._entries and self._entries[name] is not value:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = value
            return value
        return add if obj is None else add(obj)

    def _ensure_discovered(self) -> None:
        if not self._discovered:
            self._discovered = True
            assert self._discover is not None
            self._discover()

    def get(self, name: str) -> T:
        """The object registered as ``name``; :class:`UnknownNameError` names the closest ones."""
        if name not in self._entries:
            self._ensure_discovered()
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}.{did_you_mean(name, self._entries, 0.4)} "
                                   f"Known {self.kind}s: {', '.join(self.names()) or 'none'}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._ensure_discovered()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        self._ensure_discovered()
        return name in self._entries
