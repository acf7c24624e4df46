"""Redaction: the one place that hides secrets (passwords in broker and store URLs) before anything is shown.

Secrets are removed where they are held (a URL, a settings value), never guessed from printed text.
"""

from __future__ import annotations

__all__ = ["mask_url"]


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
