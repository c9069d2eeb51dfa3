"""Absolute URLs for clients that need them (DDI ``_links``, Mender download links).

The base is ``public_url`` when the operator set it; otherwise it is
rebuilt from the request as the client sent it, honouring a reverse proxy's
``X-Forwarded-Proto``, ``-Host``, ``-Port`` and ``-Prefix`` headers (they
only change links the same client receives).
"""

from __future__ import annotations

from starlette.requests import Request


def _first(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(",")[0].strip() or None


def external_base(request: Request, public_url: str | None) -> str:
    """``scheme://host[:port][prefix]`` without a trailing slash."""
    if public_url:
        return public_url.rstrip("/")
    headers = request.headers
    scheme = _first(headers.get("x-forwarded-proto")) or request.url.scheme
    host = _first(headers.get("x-forwarded-host")) or headers.get("host") or request.url.netloc
    port = _first(headers.get("x-forwarded-port"))
    if port and not host.startswith("[") and ":" not in host:
        default = {"http": "80", "https": "443"}.get(scheme)
        if port != default:
            host = f"{host}:{port}"
    prefix = (_first(headers.get("x-forwarded-prefix")) or "").rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return f"{scheme}://{host}{prefix}"
