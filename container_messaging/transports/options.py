"""TransportOptions: the plain values a transport is built from (no settings classes, no files, no environment)."""

from __future__ import annotations

import attrs

from container_messaging.redaction import mask_url

__all__ = ["TransportOptions"]


@attrs.frozen
class TransportOptions:
    """How to reach one broker. The field names are those of the ``transport`` settings that concern a transport
    (``config.TransportSettings``), with the same defaults; each adapter reads the ones it needs.

    ``url`` may be a failover list in kombu's syntax, ``url1;url2;url3`` (RabbitMQ only; :attr:`urls` splits it).
    ``queue_type`` (``classic`` or ``quorum``) and ``delivery_limit`` concern RabbitMQ only.

    The repr never shows the URL's password.
    """

    url: str = attrs.field(default="embedded://", repr=mask_url)
    data_folder: str = ".container_messaging"
    polling_interval: float = 0.05
    confirm_publish: bool = True
    reply_timeout: float = 30.0
    connect_timeout: float = 5.0
    heartbeat: int = 30
    ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_verify: bool = True
    visibility_timeout: float = 300.0
    publish_retries: int = 5
    queue_type: str = "classic"
    delivery_limit: int = 20

    @classmethod
    def of(cls, source: object) -> TransportOptions:
        """The options read from the same-named attributes of ``source`` (e.g. a ``config.TransportSettings``)."""
        return cls(**{field.name: getattr(source, field.name) for field in attrs.fields(cls)})

    @property
    def scheme(self) -> str:
        """The URL's scheme, lower case (``pyamqp``, ``redis``, ``embedded``...)."""
        return self.url.partition("://")[0].lower()

    @property
    def urls(self) -> tuple[str, ...]:
        """The URLs of a ``;`` failover list, in order (one URL: a tuple of one)."""
        return tuple(self.url.split(";"))

    @property
    def masked_url(self) -> str:
        """The URL with its password replaced by ``***``: what logs, reprs and errors show."""
        return mask_url(self.url)
