"""The web console in a real browser, against a real server and simulated devices.

Headless Chromium drives the console the way an operator would: log in,
accept a device, upload an artifact, roll it out in phases while the
simulated fleet updates, pause and resume, and read a failed device's
history. ``make screenshots`` saves the pictures shown in the README into ``docs/img``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.cli._api import ManagementClient
from fleetcast.core.signing import public_key_to_pem
from fleetcast.server import Settings
from fleetcast.sim import ServerThread, SimulatedFleet
from tests.e2e.conftest import wait_deployment, wait_inventory, wait_until
from tests.factories import BuiltArtifact, make_artifact

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.e2e

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
VIEWPORT = {"width": 1280, "height": 800}
#: The browser logs the refusals the tests provoke (a wrong token, a read-only write).
EXPECTED_REFUSAL = re.compile(r"status of 40[13] ")
#: The README's pictures must stay light.
MAX_SCREENSHOT_BYTES = 300 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    settings = Settings(data_dir=tmp_path / "server", engine_interval=0.2)
    # Playwright's sync API keeps an event loop in this thread, and preparing the
    # server runs one of its own: start it from another thread.
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(lambda: ServerThread(settings).start()).result()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def admin(server: ServerThread) -> Iterator[ManagementClient]:
    assert server.admin_token is not None
    with ManagementClient(server.url, server.admin_token) as client:
        yield client


@pytest.fixture
def release(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> Callable[[str], BuiltArtifact]:
    def build(version: str) -> BuiltArtifact:
        return make_artifact(tmp_path / "artifacts", vendor_key, version=version)

    return build


@pytest.fixture
def fleet_factory(
    tmp_path: Path, server: ServerThread, vendor_key: Ed25519PrivateKey
) -> Iterator[Callable[[int, bytes], SimulatedFleet]]:
    vendor_pub = tmp_path / "vendor.pub"
    vendor_pub.write_text(public_key_to_pem(vendor_key.public_key()))
    fleets: list[SimulatedFleet] = []

    def start(count: int, image: bytes) -> SimulatedFleet:
        fleet = SimulatedFleet(tmp_path / "devices", server.url, [vendor_pub])
        fleet.add(
            count,
            device_type="acme-gw",
            image=image,
            artifact_name="acme-fw",
            artifact_version="1.0.0",
            prefix="gw",
            long_poll=5,
            poll_interval=0.5,
        )
        fleet.start()
        fleets.append(fleet)
        return fleet

    yield start
    for fleet in fleets:
        fleet.stop()
        assert fleet.errors == {}


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """New pages in fresh contexts; any JavaScript error on them fails the test."""
    contexts = []
    errors: list[str] = []

    def new_page(viewport: dict[str, int] = VIEWPORT) -> Page:
        context = browser.new_context(viewport=viewport, device_scale_factor=1)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                errors.append(f"console {message.type}: {message.text}")
                if message.type == "error" and not EXPECTED_REFUSAL.search(message.text)
                else None
            ),
        )
        return page

    yield new_page
    for context in contexts:
        context.close()
    assert errors == [], "the console logged errors"


def _pending(admin: ManagementClient, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = admin.get("/devices", status="pending")["items"]
        return items if len(items) >= count else None

    devices: list[dict[str, Any]] = wait_until(f"{count} pending devices", ready)
    return sorted(devices, key=lambda d: d["identity"]["serial"])


def _log_in(page: Page, url: str, token: str) -> None:
    page.goto(f"{url}/ui")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("navigation", name="Main").wait_for()


def _screenshot_dir() -> Path:
    """docs/img when refreshing the README's pictures (``make screenshots``), else a temp dir,
    so an ordinary test run leaves the work tree clean."""
    if os.environ.get("FLEETCAST_UPDATE_SCREENSHOTS") == "1":
        return DOCS_IMG
    return Path(tempfile.gettempdir()) / "fleetcast-console-screenshots"


def _screenshot(page: Page, name: str) -> Path:
    page.evaluate("document.getElementById('toast').hidden = true")
    page.mouse.move(0, 0)
    directory = _screenshot_dir()
    path = directory / f"{name}.png"
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    assert 0 < path.stat().st_size < MAX_SCREENSHOT_BYTES, f"{path} is too large"
    return path


def test_an_operator_rolls_out_an_update_from_the_console(
    server: ServerThread,
    admin: ManagementClient,
    release: Callable[[str], BuiltArtifact],
    fleet_factory: Callable[[int, bytes], SimulatedFleet],
    open_page: Callable[..., Page],
) -> None:
    """Four gateways run acme-fw 1.0.0; three were accepted earlier and gw-0004 waits.
    The operator logs in, accepts gw-0004, uploads 1.1.0 with a progress bar and
    rolls it out in two phases, pauses and resumes it, and watches the progress
    reach 100% without reloading. gw-0002's health check fails on 1.1.0: it rolls
    back, and its history in the console shows the failure with its log tail."""
    from playwright.sync_api import expect

    v1, v2 = release("1.0.0"), release("1.1.0")
    admin.upload_artifact(v1.path)
    fleet = fleet_factory(4, v1.image)
    (fleet.root / "gw-0002" / "faulty").touch()
    waiting = _pending(admin, 4)
    for device in waiting[:3]:
        admin.post(f"/devices/{device['id']}/accept")
    newcomer = waiting[3]
    assert newcomer["identity"]["serial"] == "gw-0004"
    wait_inventory(admin, 3, "1.0.0")

    page = open_page()
    assert server.admin_token is not None

    # A wrong token is refused with a message; the right one opens the dashboard.
    page.goto(f"{server.url}/ui")
    expect(page.get_by_role("heading", name="Log in to Fleetcast")).to_be_visible()
    page.get_by_label("API token").fill("fca_wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not accepted")
    page.get_by_label("API token").fill(server.admin_token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("waiting for acceptance"))).to_contain_text("1")
    expect(page.get_by_role("link", name=re.compile("devices in the fleet"))).to_contain_text("3")

    # Accept the newcomer from the device list.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Devices").click()
    expect(page.get_by_role("heading", name="Devices", level=1)).to_be_visible()
    page.get_by_role("button", name="Accept gw-0004").click()
    expect(page.get_by_role("button", name="Accept gw-0004")).to_have_count(0)
    assert admin.get(f"/devices/{newcomer['id']}")["status"] == "accepted"
    wait_inventory(admin, 4, "1.0.0")
    page.reload()
    expect(page.locator("#device-count")).to_have_text("4 devices match.")
    expect(page.get_by_role("row", name=re.compile("gw-0004")).get_by_text("1.0.0")).to_be_visible()
    # Search by serial, then by installed version.
    page.get_by_role("searchbox", name="Search").fill("gw-0003")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#device-count")).to_have_text("1 device matches.")
    page.get_by_role("link", name="Clear").click()
    expect(page.locator("#device-count")).to_have_text("4 devices match.")
    _screenshot(page, "console-devices")

    # Upload 1.1.0; the progress bar fills and the artifact is listed.
    page.get_by_role("link", name="Artifacts").click()
    page.get_by_label("Artifact file (.fca)").set_input_files(str(v2.path))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_have_text("Uploaded and verified: acme-fw 1.1.0.")
    assert page.locator("#upload-progress").evaluate("p => p.value") == 100
    row = page.get_by_role("row", name=re.compile(r"acme-fw 1\.1\.0"))
    expect(row).to_contain_text("unused")
    _screenshot(page, "console-artifacts")
    row.get_by_role("link", name="acme-fw").click()
    expect(page.get_by_role("heading", name="acme-fw 1.1.0")).to_be_visible()
    keyid = v2.signed.signatures[0].keyid
    expect(page.get_by_role("region", name="Signatures")).to_contain_text(keyid)
    expect(page.get_by_label("Signed manifest (JSON)")).to_contain_text('"rootfs-image"')

    # Create a phased deployment: half the gateways, then all of them.
    page.get_by_role("link", name="Deployments").first.click()
    page.get_by_role("link", name="New deployment").click()
    page.get_by_label("Name").fill("acme-fw 1.1.0 rollout")
    page.get_by_label("Artifact").select_option(label="acme-fw 1.1.0 (acme-gw)")
    page.get_by_label(re.compile(r"^acme-gw")).check()
    page.get_by_role("button", name="Remove phase 3").click()
    for index, (percent, soak, fail) in enumerate([(50, 2, 50), (100, 0, 50)]):
        phase = page.get_by_role("group", name=f"Phase {index + 1}")
        phase.get_by_label("Share of the target (%)").fill(str(percent))
        phase.get_by_label("Soak time (s)").fill(str(soak))
        phase.get_by_label("Pause above failure (%)").fill(str(fail))
    page.get_by_role("button", name="Create deployment").click()
    expect(page.get_by_role("heading", name="acme-fw 1.1.0 rollout")).to_be_visible()
    deployment = admin.get("/deployments")["items"][0]
    assert [p["percent"] for p in deployment["phases"]] == [50, 100]
    assert [p["devices"] for p in deployment["phases"]] == [2, 2]

    # Pause at once, then resume.
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_focused()
    expect(page.locator(".title-line .badge")).to_have_text("paused")
    assert admin.get(f"/deployments/{deployment['id']}")["status"] == "paused"
    expect(page.get_by_text("Paused: paused by an operator")).to_be_visible()
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".title-line .badge")).to_have_text("running")

    # Live progress, without reloading, up to 100%.
    overall = page.get_by_role("progressbar", name="Overall progress")
    expect(overall).to_have_attribute("aria-valuenow", "100", timeout=90_000)
    expect(page.locator(".title-line .badge")).to_have_text("completed")
    final = wait_deployment(admin, deployment["id"])
    assert final["counts"] == {"success": 3, "failure": 1}
    expect(page.get_by_role("progressbar", name="Phase 2 progress")).to_have_attribute(
        "aria-valuenow", "100"
    )
    expect(page.get_by_role("img", name=re.compile("over time"))).to_be_visible()
    _screenshot(page, "console-deployment")

    # Drill down to the failed device and read its history.
    page.get_by_label("Show").select_option("failure")
    failed_row = page.get_by_role("row", name=re.compile("gw-0002"))
    expect(failed_row).to_contain_text("rolled back")
    expect(page.get_by_role("row")).to_have_count(2)  # header and gw-0002
    failed_row.get_by_role("link", name="gw-0002").click()
    expect(page.get_by_role("heading", name="gw-0002")).to_be_visible()
    history = page.get_by_role("region", name="Update history")
    failure = history.get_by_role("row").filter(has=page.locator(".badge", has_text="failure"))
    expect(failure).to_have_count(1)
    expect(failure).to_contain_text("rolled back")
    log = failure.locator("details.log pre")
    expect(log).to_be_visible()  # open by default for a failure
    expect(log).not_to_be_empty()
    expect(page.get_by_role("region", name="Device")).to_contain_text("acme-fw 1.0.0")
    _screenshot(page, "console-device-failed")

    # The dashboard now shows the new versions and the failure.
    page.get_by_role("link", name="Dashboard").click()
    versions = page.get_by_role("img", name="Devices per installed version")
    expect(versions).to_be_visible()
    expect(page.get_by_role("region", name="Recent failures")).to_contain_text("gw-0002")
    installed = page.get_by_role("region", name="Installed versions")
    expect(installed.get_by_role("row", name=re.compile(r"acme-fw 1\.1\.0 3"))).to_be_visible()
    expect(installed.get_by_role("row", name=re.compile(r"acme-fw 1\.0\.0 1"))).to_be_visible()
    _screenshot(page, "console-dashboard")

    # The same deployment page on a phone.
    phone = open_page(viewport={"width": 390, "height": 844})
    _log_in(phone, server.url, server.admin_token)
    phone.goto(f"{server.url}/ui/#/deployments/{deployment['id']}")
    expect(phone.get_by_role("progressbar", name="Overall progress")).to_have_attribute(
        "aria-valuenow", "100"
    )
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    _screenshot(phone, "console-phone")


def test_a_read_only_token_sees_everything_and_changes_nothing(
    server: ServerThread,
    admin: ManagementClient,
    release: Callable[[str], BuiltArtifact],
    fleet_factory: Callable[[int, bytes], SimulatedFleet],
    open_page: Callable[..., Page],
) -> None:
    """A wall screen logs in with a read-only token: it sees the pending device,
    the artifact and the deployment, but no button to accept, upload, delete,
    create, pause or abort."""
    from playwright.sync_api import expect

    v1 = release("1.0.0")
    artifact = admin.upload_artifact(v1.path)
    fleet_factory(2, v1.image)
    first, second = _pending(admin, 2)
    admin.post(f"/devices/{first['id']}/accept")
    deployment = admin.post(
        "/deployments",
        {
            "name": "watched",
            "artifact_id": artifact["id"],
            "target": {"device_ids": [first["id"]]},
            "phases": [{"percent": 100, "soak_seconds": 0}],
        },
    )
    admin.post(f"/deployments/{deployment['id']}/pause")
    token = admin.post("/tokens", {"name": "wall screen", "scope": "read-only"})["token"]

    page = open_page()
    _log_in(page, server.url, token)
    expect(page.locator("#whoami")).to_have_text("wall screen read-only")
    page.goto(f"{server.url}/ui/#/devices")
    expect(page.get_by_role("region", name=re.compile("Waiting for acceptance"))).to_contain_text(
        "gw-0002"
    )
    expect(page.get_by_text("read-only token")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Accept|Reject"))).to_have_count(0)
    page.goto(f"{server.url}/ui/#/devices/{second['id']}")
    expect(page.get_by_role("heading", name="gw-0002")).to_be_visible()
    expect(page.locator(".page-actions button")).to_have_count(0)
    page.goto(f"{server.url}/ui/#/artifacts")
    expect(page.get_by_role("row", name=re.compile(r"acme-fw 1\.0\.0"))).to_be_visible()
    expect(page.get_by_label("Artifact file (.fca)")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Delete"))).to_have_count(0)
    page.goto(f"{server.url}/ui/#/deployments")
    expect(page.get_by_role("link", name="watched")).to_be_visible()
    expect(page.get_by_role("link", name="New deployment")).to_have_count(0)
    page.get_by_role("link", name="watched").click()
    expect(page.locator(".title-line .badge")).to_have_text("paused")
    expect(page.get_by_role("button", name=re.compile("Pause|Resume|Abort"))).to_have_count(0)
    # The audit log shows what the admin did, by which token.
    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    paused = page.get_by_role("row", name=re.compile(r"deployments\.pause"))
    expect(paused).to_contain_text("initial admin token")
    expect(paused).to_contain_text(deployment["id"])
    # Even a hand-made request is refused by the server, not only hidden by the console.
    answer = page.evaluate(
        """async ([url, token, id]) => {
            const r = await fetch(`${url}/api/v1/deployments/${id}/resume`,
                {method: "POST", headers: {Authorization: `Bearer ${token}`}});
            return [r.status, (await r.json()).error.code];
        }""",
        [server.url, token, deployment["id"]],
    )
    assert answer == [403, "forbidden"]
    assert admin.get(f"/deployments/{deployment['id']}")["status"] == "paused"
