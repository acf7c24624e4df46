"""Redaction: the one place that hides secrets (passwords in broker and store URLs) before anything is shown.

Secrets are removed where they are held (a URL, a settings value), never guessed from printed text: a settings value
that may carry a password is a :class:`SecretUrl`, whose ``repr()`` and ``str()`` show it through :func:`mask_url`.
"""

from __future__ import annotations

__all__ = ["SecretUrl", "mask_url"]


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for logs, reprs and error messages.

    ``pyamqp://guest:secret@127.0.0.1:5672//`` becomes ``pyamqp://guest:***@127.0.0.1:5672//`` and
    ``redis://:secret@host`` becomes ``redis://:***@host``.  A ``;``-separated failover list is masked URL by URL.
    A URL without a password is returned unchanged.  When a URL is malformed (an unencoded ``/``, ``?`` or ``#`` in
    the password), more is masked rather than less.
    """
    return ";".join(_mask_one(part) for part in url.split(";"))


def _mask_one(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    netloc_end = min((index for index in (rest.find(char) for char in "/?#") if index != -1), default=len(rest))
    netloc = rest[:netloc_end]
    if "@" in netloc:
        userinfo, _, after = rest[:netloc_end].rpartition("@")
        after += rest[netloc_end:]
    elif "@" in rest:
        # Not a well-formed URL: the password probably holds an unencoded '/', '?' or '#'.  Mask up to the last '@'.
        userinfo, _, after = rest.rpartition("@")
    else:
        return url
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return url
    return f"{scheme}://{user}:***@{after}"


class SecretUrl(str):
    """A URL that may hold a password: its characters are the real URL, its ``repr()`` and ``str()`` are masked.

    Anything that reads the text (``urllib.parse``, kombu, redis-py, slicing, ``==``) sees the password; anything
    that shows the value (``repr()``, ``str()``, f-strings, ``%s``, the repr of a dict or settings object holding it,
    an error message quoting it) shows :func:`mask_url` of it.  :meth:`reveal` gives the plain ``str`` for a client
    that needs the password as text and would otherwise call ``str()`` on it.
    """

    __slots__ = ()

    def __new__(cls, url: str) -> SecretUrl:
        # str(url) of a SecretUrl is masked: take its characters instead, so that wrapping twice keeps the URL.
        return super().__new__(cls, str.__str__(url) if isinstance(url, str) else url)

    def reveal(self) -> str:
        """The URL as a plain ``str``, password included: only for handing it to a client that connects."""
        return str.__str__(self)

    def __str__(self) -> str:
        return mask_url(self)

    def __repr__(self) -> str:
        return repr(mask_url(self))

    def __format__(self, format_spec: str) -> str:
        return format(mask_url(self), format_spec)
