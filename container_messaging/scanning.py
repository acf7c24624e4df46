"""Module scanning: finds every marked handler in the configured packages and modules.

The only module that imports application code by name. Packages are walked recursively; a class or function is
taken only from the module that defines it (a re-export is not found twice).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from container_messaging.errors import HandlerDefinitionError, ScanError
from container_messaging.markers import (
    HandlerMarker,
    SendingDeclaration,
    is_distributed,
    markers_of,
    sending_declarations_of,
)

__all__ = ["FoundHandler", "FoundSender", "scan", "scan_senders"]


@attrs.frozen
class FoundHandler:
    """One marked function: its owner class (None for a module-level function) and what the marker says."""

    owner: type | None
    function: Callable[..., Any] = attrs.field(repr=False)
    marker: HandlerMarker
    distributed: bool
    name: str


def _import(name: str, root: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        where = "" if name == root else f" (found while scanning {root!r})"
        raise ScanError(f"cannot import module {name!r}{where}: {type(exc).__name__}: {exc}") from exc


def _modules(root: str) -> Iterator[types.ModuleType]:
    module = _import(root, root)
    yield module
    path = getattr(module, "__path__", None)
    if path is None:
        return

    def onerror(name: str) -> None:
        _import(name, root)  # re-raise as a ScanError naming the module

    for info in sorted(pkgutil.walk_packages(path, root + ".", onerror=onerror), key=lambda i: i.name):
        yield _import(info.name, root)


def _handlers_of(function: Any, owner: type | None, qualname: str) -> Iterator[FoundHandler]:
    if isinstance(function, classmethod) and markers_of(function):
        raise HandlerDefinitionError(f"handler {qualname} is a classmethod; make it an instance or static method")
    if isinstance(function, staticmethod):
        owner = None  # called without an instance
    func = function.__func__ if isinstance(function, (staticmethod, classmethod)) else function
    for marker in markers_of(func):
        yield FoundHandler(owner, func, marker, is_distributed(func), qualname)


def _scan_module(module: types.ModuleType) -> Iterator[FoundHandler]:
    modname = module.__name__
    for attr_name, obj in sorted(vars(module).items()):
        if getattr(obj, "__module__", None) != modname:
            continue
        if inspect.isclass(obj):
            for member_name, member in obj.__dict__.items():
                yield from _handlers_of(member, obj, f"{modname}.{obj.__qualname__}.{member_name}")
        elif inspect.isfunction(obj):
            yield from _handlers_of(obj, None, f"{modname}.{attr_name}")


def scan(modules: Iterable[str]) -> tuple[FoundHandler, ...]:
    """Imports each module (and every submodule of a package) and returns the marked handlers found, in order."""
    found: list[FoundHandler] = []
    seen: set[str] = set()
    for root in modules:
        for module in _modules(root):
            if module.__name__ in seen:
                continue
            seen.add(module.__name__)
            found.extend(_scan_module(module))
    return tuple(found)


# --------------------------------------------------------------------------------------------------------------------
# Sending declarations (@sends_command, @publishes, @sends_message): found in the same modules as the handlers


@attrs.frozen
class FoundSender:
    """One sending declaration of a function: its owner class (None for a module-level function) and what it says."""

    owner: type | None
    function: Callable[..., Any] = attrs.field(repr=False)
    declaration: SendingDeclaration
    name: str


def _functions(module: types.ModuleType) -> Iterator[tuple[Any, type | None, str]]:
    """Each function and method the module defines, with its owner class and qualified name."""
    modname = module.__name__
    for attr_name, obj in sorted(vars(module).items()):
        if getattr(obj, "__module__", None) != modname:
            continue
        if inspect.isclass(obj):
            for member_name, member in obj.__dict__.items():
                yield member, obj, f"{modname}.{obj.__qualname__}.{member_name}"
        elif inspect.isfunction(obj):
            yield obj, None, f"{modname}.{attr_name}"


def scan_senders(modules: Iterable[str]) -> tuple[FoundSender, ...]:
    """Imports the modules as :func:`scan` does and returns every sending declaration found, in order."""
    found: list[FoundSender] = []
    seen: set[str] = set()
    for root in modules:
        for module in _modules(root):
            if module.__name__ in seen:
                continue
            seen.add(module.__name__)
            for member, owner, qualname in _functions(module):
                func = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                for declaration in sending_declarations_of(func):
                    found.append(
                        FoundSender(None if isinstance(member, staticmethod) else owner, func, declaration, qualname)
                    )
    return tuple(found)
