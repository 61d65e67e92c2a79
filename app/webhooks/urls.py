"""Which URLs an endpoint may have: http or https, a host, no credentials, and, when
`CORRAL_WEBHOOK_ALLOWED_HOSTS` is set, a host on that list (the SSRF guard: without it, an
admin key could make every replica POST to anything its network reaches).

The list holds exact host names and `*.example.com` patterns (any subdomain of example.com,
not example.com itself), compared as host names are: case-insensitively, a trailing dot
ignored. It is checked when an endpoint is saved and again before each delivery, so narrowing
the list stops deliveries to hosts no longer on it.

A URL holds no whitespace and no control or format character: `urlsplit` silently drops some
of them (leading spaces, tabs, newlines), so it would judge another URL than the one stored,
which httpx then refuses at every delivery or reads as a relative URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from app.inputs import unprintable

MAX_URL_LENGTH = 2000


class UnacceptableURL(ValueError):
    """The URL cannot be an endpoint's (the message says why)."""


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    for pattern in allowed:
        # The environment's list is lowercased already (app.settings); one built in code may not be.
        pattern = pattern.strip().lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def check(url: str, allowed: Sequence[str]) -> None:
    """Raise `UnacceptableURL` unless `url` may receive webhooks."""
    if len(url) > MAX_URL_LENGTH:
        raise UnacceptableURL(f"the URL is longer than {MAX_URL_LENGTH} characters")
    found = next((f"U+{ord(c):04X}" for c in url if c.isspace()), None) or unprintable(url)
    if found is not None:
        raise UnacceptableURL(
            f"the URL must not hold whitespace or control characters (found {found})"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnacceptableURL(f"the URL does not parse: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnacceptableURL("the URL must be http or https")
    if not parts.hostname:
        raise UnacceptableURL("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnacceptableURL(
            "the URL must not carry credentials; receivers verify the signature instead"
        )
    if parts.fragment:
        raise UnacceptableURL("the URL must not have a fragment")
    if port == 0:
        raise UnacceptableURL("the URL's port must not be 0")
    if not host_allowed(parts.hostname, allowed):
        raise UnacceptableURL(f"host {parts.hostname!r} is not in CORRAL_WEBHOOK_ALLOWED_HOSTS")
