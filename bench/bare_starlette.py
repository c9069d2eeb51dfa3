"""The baseline of bench/checkin.py: a bare Starlette endpoint answering like an idle /next."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = b'{"update":null}'
ETAG = '"x"'


async def next_update(request: Request) -> Response:
    headers = {"ETag": ETAG, "Cache-Control": "private, no-cache"}
    if request.headers.get("if-none-match") == ETAG:
        return Response(status_code=304, headers=headers)
    return Response(BODY, media_type="application/json", headers=headers)


app = Starlette(routes=[Route("/api/device/v1/next", next_update)])
