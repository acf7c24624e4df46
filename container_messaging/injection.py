"""Resolution by type on dependency-injector: an index of providers by the class they provide, and autowiring.

dependency-injector resolves by provider name only.  An :class:`Injector` keeps, next to one ``DynamicContainer``,
an index ``{type: (name, provider)}`` and answers "which provider gives me a ``T``?":

1. an **explicit** provider of ``T`` (the framework's own, or one of an application container handed in: a
   ``Factory``/``Singleton`` of ``T``, an ``Object`` holding a ``T``, a ``Callable`` annotated to return ``T``, a
   ``Dependency(instance_of=T)``); two explicit providers of one type are an :class:`AmbiguousDependencyError`;
2. else the one explicit provider of a **subclass** of ``T`` (a ``Protocol`` or an abstract class can only be
   provided this way); several are ambiguous;
3. else ``T`` is **autowired**: built by the injector as a ``Singleton`` whose constructor parameters are resolved
   the same way, by their type hints, at once (so a missing dependency is an error when the container is built,
   naming the class and the parameter, not at the first message).

A parameter annotated ``Annotated[T, Named("name")]`` gets the provider registered under that name instead (e.g.
a distributed bus other than the default one); a name nothing is registered under, or whose provider gives no
``T``, is an error naming the parameter.

A constructor parameter keeps its default when nothing provides its type; ``T | None`` without a default gets
``None``; a cycle is a :class:`ContainerError` naming the chain.  Classes of the standard library's basic modules
and of container_messaging itself are never autowired: they are provided explicitly or not at all.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final

import attrs
from dependency_injector import containers, providers

from container_messaging.errors import AmbiguousDependencyError, ContainerError, MissingDependencyError

__all__ = ["Injector", "Named"]


@attrs.frozen
class Named:
    """Asks for what is registered under a name rather than for a type: ``bus: Annotated[DistributedBus,
    Named("internal_bus")]`` in a constructor or a handler's parameters (the same as ``container.get("name")``)."""

    name: str


_NOT_AUTOWIRED: Final = frozenset({"builtins", "typing", "collections.abc", "abc", "types"})
_FRAMEWORK: Final = "container_messaging"


def _type_name(tp: Any) -> str:
    """A class as ``module.QualifiedName`` (anything else as its repr), for error messages."""
    return f"{tp.__module__}.{tp.__qualname__}" if isinstance(tp, type) else repr(tp)


def _provider_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}".replace(".", "_").replace("<", "").replace(">", "")


def _provided_type(provider: Any) -> type | None:
    """The class an explicit dependency-injector provider provides, when it can be told without calling it."""
    candidate: Any = None
    if isinstance(provider, (providers.Factory, providers.BaseSingleton)):
        candidate = provider.cls
    elif isinstance(provider, providers.Object):
        value = provider.provides
        candidate = None if value is None or isinstance(value, type) else type(value)
    elif isinstance(provider, providers.Callable):
        try:
            candidate = typing.get_type_hints(provider.provides).get("return")
        except Exception:
            candidate = None
    elif isinstance(provider, providers.Dependency):
        candidate = provider.instance_of
    if isinstance(candidate, type) and candidate is not object:
        return candidate
    return None


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``T | None`` (or ``Optional[T]``) as ``(T, True)``; anything else as ``(tp, False)`` (``Annotated`` is
    looked through)."""
    if typing.get_origin(tp) is Annotated:
        tp = tp.__origin__
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


class Injector:
    """The type index and autowiring over one ``DynamicContainer`` (see the module docstring for the rules)."""

    def __init__(self, di: containers.DynamicContainer) -> None:
        self.di = di
        self._by_type: dict[type, tuple[str, Any]] = {}
        self._explicit: dict[type, tuple[str, Any]] = {}
        self._refused: dict[type, Callable[[str], Exception]] = {}
        self._building: list[type] = []

    def register(self, name: str, tp: type | None, provider: Any, owner: str) -> None:
        """Adds an explicit provider under ``name``, indexed by ``tp`` (None: by name only); ``owner`` for errors."""
        if name in self.di.providers:
            raise ContainerError(f"{owner} defines a provider named {name!r}, which is already taken")
        self.di.set_provider(name, provider)
        if tp is None:
            return
        existing = self._explicit.get(tp)
        if existing is not None:
            raise AmbiguousDependencyError(
                f"two explicit providers for {_type_name(tp)}: {existing[0]!r} and {name!r} ({owner}); "
                "keep one, or ask for them by name"
            )
        self._explicit[tp] = (name, provider)
        self._by_type[tp] = (name, provider)

    def register_container(self, app: Any) -> None:
        """Adds every provider of an application's dependency-injector container, by name and by provided type."""
        app_providers = getattr(app, "providers", None)
        if not isinstance(app_providers, Mapping):
            raise ContainerError(f"app must be a dependency-injector container, got {type(app).__name__}")
        for name, provider in app_providers.items():
            if name in self.di.providers:
                raise ContainerError(
                    f"the application container's provider {name!r} clashes with the framework's "
                    f"provider of that name; rename it"
                )
            self.register(name, _provided_type(provider), provider, "the application container")

    def refuse(self, tp: type, error: Callable[[str], Exception]) -> None:
        """Never autowire ``tp``: asking for it (with no explicit provider) raises ``error(where)``."""
        self._refused[tp] = error

    def provider_for(self, tp: Any, where: str) -> Any:
        """The provider of ``tp`` (explicit, then a subclass provided explicitly, then autowired; the one registered
        under the name of ``Annotated[T, Named(name)]``); ``where`` names who needs it, for the error when nothing
        can provide it."""
        if typing.get_origin(tp) is Annotated:
            named = next((m for m in tp.__metadata__ if isinstance(m, Named)), None)
            tp = tp.__origin__
            if named is not None:
                return self._named(named.name, _unwrap_optional(tp)[0], where)
        tp, _optional = _unwrap_optional(tp)
        found = self._by_type.get(tp)
        if found is not None:
            return found[1]
        if not isinstance(tp, type):
            raise MissingDependencyError(f"no provider for {tp!r}, needed by {where}")
        if getattr(tp, "_is_protocol", False) or inspect.isabstract(tp):
            implementation = self._explicit_subclass(tp, where)
            if implementation is not None:
                return implementation
            raise MissingDependencyError(
                f"no provider for {_type_name(tp)}, needed by {where}; it is abstract, so provide an implementation "
                "in the application container"
            )
        refusal = self._refused.get(tp)
        if refusal is not None:
            raise refusal(where)
        subclass = self._explicit_subclass(tp, where)
        if subclass is not None:
            return subclass
        return self._autowire(tp, where)

    def _named(self, name: str, tp: Any, where: str) -> Any:
        provider = self.di.providers.get(name)
        if provider is None:
            known = ", ".join(sorted(n for n in self.di.providers if not n.startswith("_")))
            raise MissingDependencyError(f"no provider named {name!r}, needed by {where} (known: {known})")
        provided = _provided_type(provider)
        if isinstance(tp, type) and provided is not None and not issubclass(provided, tp):
            raise ContainerError(
                f"{where} asks for {_type_name(tp)} named {name!r}, but that provider gives {_type_name(provided)}"
            )
        return provider

    def _explicit_subclass(self, tp: type, where: str) -> Any:
        """The one explicit provider of a subclass of ``tp`` (None when there is none; an error when several)."""
        try:
            candidates = [(n, p) for t, (n, p) in self._explicit.items() if t is not tp and issubclass(t, tp)]
        except TypeError:  # a Protocol that is not runtime-checkable cannot be matched by subclass
            return None
        if len(candidates) > 1:
            raise AmbiguousDependencyError(
                f"{where} needs {_type_name(tp)}, provided by several explicit providers: "
                + ", ".join(repr(n) for n, _ in candidates)
            )
        if not candidates:
            return None
        self._by_type[tp] = candidates[0]
        return candidates[0][1]

    def _autowire(self, cls: type, where: str) -> Any:
        if cls.__module__ in _NOT_AUTOWIRED or cls.__module__.split(".")[0] == _FRAMEWORK:
            raise MissingDependencyError(
                f"no provider for {_type_name(cls)}, needed by {where}; provide it in the application container"
            )
        if cls in self._building:
            chain = " -> ".join(c.__qualname__ for c in [*self._building, cls])
            raise ContainerError(f"circular dependency: {chain}")
        self._building.append(cls)
        try:
            kwargs = self._constructor_injections(cls)
        finally:
            self._building.pop()
        provider = providers.Singleton(cls, **kwargs)
        name = _provider_name(cls)
        if name not in self.di.providers:
            self.di.set_provider(name, provider)
        self._by_type[cls] = (name, provider)
        return provider

    def _constructor_injections(self, cls: type) -> dict[str, Any]:
        init = cls.__init__  # type: ignore[misc]
        if init is object.__init__:
            return {}
        try:
            hints = typing.get_type_hints(init, include_extras=True)
            params = list(inspect.signature(init).parameters.values())[1:]
        except Exception as exc:
            raise ContainerError(f"cannot read the constructor of {_type_name(cls)}: {exc}") from exc
        kwargs: dict[str, Any] = {}
        for param in params:
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            where = f"parameter {param.name!r} of {_type_name(cls)}"
            annotation = hints.get(param.name)
            if annotation is None:
                if param.default is inspect.Parameter.empty:
                    raise MissingDependencyError(f"{where} has no type annotation, so it cannot be injected")
                continue
            try:
                kwargs[param.name] = self.provider_for(annotation, where)
            except MissingDependencyError:
                if param.default is not inspect.Parameter.empty:
                    continue  # the constructor's default applies
                if not _unwrap_optional(annotation)[1]:
                    raise
                kwargs[param.name] = providers.Object(None)  # ``T | None`` with nothing providing T
        return kwargs
