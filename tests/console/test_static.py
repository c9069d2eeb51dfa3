"""The console's files, served in process: what ships, how it is served, what it calls.

The browser tests (``test_console.py``) show the console works; these show it
stays a self-contained static app that uses only the public management API.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fleetcast.server import Settings, create_app
from fleetcast.server.console import STATIC_DIR

FILES = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())
SCRIPTS = [p for p in FILES if p.suffix == ".js"]
# get("/devices", ...), post(`/deployments/${id}/pause`), del(...), upload("/artifacts", ...)
API_CALL = re.compile(r"\b(?:get|post|del|api|upload)\(\s*(?:\"[A-Z]+\",\s*)?[`\"](/[^`\"]*)[`\"]")
IMPORT = re.compile(r"^import .* from \"(\.[^\"]+)\";$", re.MULTILINE)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(data_dir=tmp_path))  # static files need no database
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fleetcast.test") as client:
        yield client


async def test_ui_serves_the_page_with_strict_headers(http: httpx.AsyncClient) -> None:
    redirect = await http.get("/ui")
    assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/ui/")
    page = await http.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="js/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-content-type-options"] == "nosniff"
    script = await http.get("/ui/js/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].split(";")[0] in {
        "text/javascript",
        "application/javascript",
    }
    missing = await http.get("/ui/js/nope.js")
    assert missing.status_code == 404


async def test_every_referenced_file_is_served(http: httpx.AsyncClient) -> None:
    """Each asset index.html names and each module another imports exists."""
    index = (STATIC_DIR / "index.html").read_text()
    wanted = {f"/ui/{ref}" for ref in re.findall(r'(?:src|href)="([a-z][^":#]*)"', index)}
    assert "/ui/console.css" in wanted and "/ui/js/app.js" in wanted
    for script in SCRIPTS:
        for ref in IMPORT.findall(script.read_text()):
            target = (script.parent / ref).resolve()
            wanted.add("/ui/" + target.relative_to(STATIC_DIR).as_posix())
    for url in sorted(wanted):
        assert (await http.get(url)).status_code == 200, url


def test_nothing_is_loaded_from_elsewhere() -> None:
    """No CDN, no external font or script: the console works on an isolated network."""
    for path in FILES:
        text = path.read_text()
        external = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[/\"'`]", text)
        # The SVG namespace is an identifier, not something fetched.
        external = [u for u in external if "www.w3.org" not in u]
        assert external == [], f"{path.name} refers to {external}"
        assert not re.search(r"\.(?:inner|outer)HTML\b|insertAdjacentHTML", text), path.name


async def test_the_console_calls_only_the_public_management_api(
    http: httpx.AsyncClient,
) -> None:
    """Every page's data has its JSON twin: each path the console calls is in the OpenAPI spec."""
    spec = (await http.get("/openapi.json")).json()
    # A path parameter becomes a plain segment: /deployments/{deployment_id}/pause -> .../P/pause.
    public = [
        re.sub(r"\{[^}]+\}", "P", path.removeprefix("/api/v1"))
        for path in spec["paths"]
        if path.startswith("/api/v1/")
    ]
    called = set()
    for script in SCRIPTS:
        called.update(API_CALL.findall(script.read_text()))
    assert {"/fleet/summary", "/tokens/me", "/artifacts", "/events"} <= called
    assert "/deployments/${id}/${action}" in called
    unknown = []
    for path in sorted(called):
        # A template part (`${id}`) may stand for any one segment, literal parts must match.
        pattern = "^" + "[^/]+".join(map(re.escape, re.split(r"\$\{[^}]+\}", path))) + "$"
        if not any(re.match(pattern, candidate) for candidate in public):
            unknown.append(path)
    assert unknown == [], f"the console calls paths the management API does not have: {unknown}"
