"""The public API: ``container_messaging.__all__`` is complete and sorted, and so is every module's ``__all__``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import typing
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import container_messaging
from container_messaging import errors

#: Package classes the API takes or hands out that stay out of ``container_messaging.__all__``, and why.
NOT_EXPORTED: dict[str, str] = {
    "container_messaging.transports.base.BaseTransport": (
        "the transport port: container_messaging.transports is its public package (with create_transport)"
    ),
    "container_messaging.transports.base.Delivery": (
        "a received message at the transport port (DeadLetterEntry.from_delivery): container_messaging.transports"
    ),
    "container_messaging.conversion.PayloadPlan": "what Converter.plan prepares for one handler at boot",
    "container_messaging.invocation.Handler": (
        "a scanned handler ready to run, as the middleware hooks see it (name, kind, routing key): "
        "container_messaging.invocation"
    ),
    "container_messaging.transports.base.OutboundMessage": (
        "a message at the transport port, as the publishing hook sees it: container_messaging.transports"
    ),
}


def _modules() -> Iterator[ModuleType]:
    yield container_messaging
    for info in pkgutil.walk_packages(container_messaging.__path__, "container_messaging."):
        if info.name != "container_messaging.__main__":  # importing it runs the command line
            yield importlib.import_module(info.name)


def _package_classes(annotation: Any) -> Iterator[type]:
    if isinstance(annotation, type) and annotation.__module__.startswith("container_messaging"):
        yield annotation
    for part in (typing.get_origin(annotation), *typing.get_args(annotation)):
        if part is not None:
            yield from _package_classes(part)


def _signature_classes(obj: Any) -> Iterator[type]:
    """The package classes named in the annotations of a function, or of a class's public fields, methods and
    properties. Not constructors: the container builds the buses, consumers and the rest, and the constructor of a
    value class users build (settings, options) is its fields."""
    if not isinstance(obj, type):
        annotations = list(typing.get_type_hints(obj).values())
    else:
        annotations = [a for name, a in typing.get_type_hints(obj).items() if not name.startswith("_")]
        for name, member in inspect.getmembers(obj):
            function = member.fget if isinstance(member, property) else member
            if not name.startswith("_") and (inspect.isfunction(function) or inspect.ismethod(function)):
                annotations.extend(typing.get_type_hints(function).values())
    for annotation in annotations:
        yield from _package_classes(annotation)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_every_error_is_exported() -> None:
    """Every error of the tree in errors.py can be imported from container_messaging, to be caught."""
    assert set(errors.__all__) <= set(container_messaging.__all__)


def test_every_class_the_api_takes_or_returns_is_exported() -> None:
    """Rule: a user can import from container_messaging every package class the exported API takes or hands out
    (the annotations of each exported class's fields, public methods and properties, and of each exported
    function), except those in NOT_EXPORTED, each with its reason; and NOT_EXPORTED has no stale entry."""
    exported = {getattr(container_messaging, name) for name in container_messaging.__all__}
    reached = {_qualified(cls) for obj in exported for cls in _signature_classes(obj)}
    missing = reached - {_qualified(obj) for obj in exported if isinstance(obj, type)} - NOT_EXPORTED.keys()
    assert sorted(missing) == []
    assert sorted(NOT_EXPORTED.keys() - reached) == []


def test_every_exported_name_is_defined_by_the_package() -> None:
    """Each name in container_messaging.__all__ exists and is defined in one of the package's own modules."""
    for name in container_messaging.__all__:
        obj = getattr(container_messaging, name)
        assert obj.__module__.startswith("container_messaging."), name


def test_every_modules_all_is_sorted_and_defined() -> None:
    """Every module of the package has an ``__all__`` in ``sorted()`` order naming only what the module has."""
    for module in _modules():
        names = list(module.__all__)
        assert names == sorted(names), module.__name__
        assert [name for name in names if not hasattr(module, name)] == [], module.__name__


def test_the_core_works_without_the_redis_extra() -> None:
    """With redis-py missing, importing the package and building a Service Map container with a stream channel on
    memory works, and only a redis:// transport says which extra to install."""
    code = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "import container_messaging\n"
        "from container_messaging import ConfigurationError, MessagingContainer\n"
        "MessagingContainer.from_dict({'service_name': 'a', 'transport': {'url': 'memory://'},\n"
        "    'service_map': {'channels': {'in_a': None}, 'commands': {'a': 'in_a'}}, 'consume': ['in_a']})\n"
        "container = MessagingContainer.from_dict({'transport': {'url': 'redis://127.0.0.1:6379/0'}})\n"
        "try:\n"
        "    container.transport\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'container-messaging[redis]'" in done.stdout
