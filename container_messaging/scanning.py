"""Module scanning: finds every marked handler in the configured packages and modules.

The only module that imports application code by name. Packages are walked recursively; a class or function is
taken only from the module that defines it (a re-export is not found twice).

Where modules are looked for: the ``folders`` given (the container gives the configuration file's folder, so that
``scan: [billing]`` finds a ``billing`` package next to the file whatever the working directory), then ``sys.path``.
The folders are put at the front of ``sys.path`` while scanning, as Python does with a script's folder, and taken
off afterwards (a package's submodules are found through the package itself, so they keep importing).  A module
that cannot be found is a :class:`~container_messaging.errors.ScanError` listing the folders tried and how to fix it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
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
        hint = _not_found_hint(name, exc)
        raise ScanError(f"cannot import module {name!r}{where}: {type(exc).__name__}: {exc}{hint}") from exc


def _not_found_hint(name: str, exc: Exception) -> str:
    """Where a scanned module that does not exist was looked for, and how to fix it ('' for any other failure)."""
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing is None or not (name == missing or name.startswith(f"{missing}.")):
        return ""  # the module exists, and what it imports is missing: the message names that
    tried = ", ".join(repr(entry or os.getcwd()) for entry in sys.path)
    return (
        f"; looked for {missing!r} in: {tried}. Check the name under scan; a module next to the configuration file "
        "is found in the file's folder, any other needs its parent folder on PYTHONPATH, or its project installed "
        "(pip install -e .)"
    )


@contextmanager
def _on_sys_path(folders: Sequence[str]) -> Iterator[None]:
    """Puts ``folders`` (those not on it yet) at the front of ``sys.path`` while scanning, and takes them off after."""
    added = [folder for folder in dict.fromkeys(folders) if folder not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)


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


def scan(modules: Iterable[str], *, folders: Sequence[str] = ()) -> tuple[FoundHandler, ...]:
    """Imports each module (and every submodule of a package), looking in ``folders`` first, then on ``sys.path``,
    and returns the marked handlers found, in order."""
    found: list[FoundHandler] = []
    seen: set[str] = set()
    with _on_sys_path(folders):
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
