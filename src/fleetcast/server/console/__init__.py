"""The web console: a static single-page app served at ``/ui``.

Plain ES modules and CSS under ``static/``, committed as they are served:
no build step, no CDN, no npm. The page asks the operator for a management
API token, keeps it in ``sessionStorage`` and calls the public management
API (``/api/v1``) with it like any other client; the server has no
console-only endpoint. See ``docs/adr/0004-web-console.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR: Final = Path(__file__).parent / "static"

#: Everything the console loads comes from the server itself; nothing inline.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


class ConsoleFiles(StaticFiles):
    """Static files with the console's security headers, revalidated on every load.

    ``no-cache`` (not ``no-store``): the browser keeps the files but asks with
    their ETag each time, so a server upgrade never runs a stale mix of modules.
    """

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


def console_files() -> ConsoleFiles:
    """The ASGI app serving the console (``index.html`` for the directory itself)."""
    return ConsoleFiles(directory=STATIC_DIR, html=True)


__all__ = ["STATIC_DIR", "ConsoleFiles", "console_files"]
