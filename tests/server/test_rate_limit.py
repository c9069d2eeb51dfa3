"""Rate limits on device authentication: per identity and per address, 429 with Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fleetcast.server import Settings
from fleetcast.server.ratelimit import TokenBuckets
from tests.server.compat.helpers import DdiDevice, MenderDevice, ddi_device
from tests.server.harness import Server, running_server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills_at_its_rate() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(3, per_minute=6, clock=clock)  # one attempt back every 10 s
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(10.0)
    assert buckets.take("b") == 0.0, "keys do not share a bucket"
    clock.now += 5
    assert buckets.take("a") == pytest.approx(5.0), "a refused attempt costs nothing"
    clock.now += 5
    assert buckets.take("a") == 0.0
    clock.now += 3600
    assert [buckets.take("a") for _ in range(4)][-1] > 0, "never more than the burst"


def test_bucket_forgets_least_recently_used_keys_and_can_be_off() -> None:
    buckets = TokenBuckets(1, per_minute=1, max_keys=2, clock=FakeClock())
    for key in ("a", "b", "c"):
        assert buckets.take(key) == 0.0
    assert buckets.take("a") == 0.0, "a was dropped when c came"
    assert buckets.take("c") > 0
    off = TokenBuckets(0, per_minute=1)
    assert all(off.take("a") == 0.0 for _ in range(100))


@pytest.fixture
async def limited(settings: Settings, admin_token: str) -> AsyncIterator[Server]:
    limited = settings.model_copy(
        update={
            "auth_identity_burst": 2,
            "auth_identity_per_minute": 1,
            "auth_client_burst": 5,
            "auth_client_per_minute": 1,
        }
    )
    async with running_server(limited, admin_token) as srv:
        yield srv


async def test_one_identity_is_limited_with_retry_after(limited: Server) -> None:
    """A device (or someone posing as it) that keeps trying gets 429 and is told when to retry."""
    token = (
        await limited.admin.post("/api/v1/enrollment-tokens", json={"expires_in": 600})
    ).json()["token"]
    device = limited.device("SN-1")
    await device.login(enrollment_token=token)
    await device.login(enrollment_token=token)
    refused = await device.auth(enrollment_token=token)
    assert refused.status_code == 429
    assert refused.json() == {
        "error": {
            "code": "rate_limited",
            "message": refused.json()["error"]["message"],
            "details": {"retry_after": int(refused.headers["Retry-After"])},
        }
    }
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "device identity" in refused.json()["error"]["message"]
    # Another identity from the same address still gets in.
    await limited.device("SN-2").login(enrollment_token=token)


async def test_one_address_is_limited_across_identities(limited: Server) -> None:
    answers = [(await limited.device(f"SN-{i}").auth()).status_code for i in range(6)]
    assert answers == [401] * 5 + [429], "pending devices answer 401 device_pending"
    # Bad signatures count too: the budget is spent before any verification.
    refused = await limited.device("SN-9").auth(signature="00")
    assert refused.status_code == 429 and "address" in refused.json()["error"]["message"]
    # Device requests with a token are not limited: only authentication is.
    assert (await limited.admin.get("/api/v1/devices")).status_code == 200


async def test_wrong_ddi_tokens_use_up_the_address_budget(limited: Server) -> None:
    """A hawkBit client guessing TargetTokens is answered 429 after the address's budget
    (5 here); the same device's correct polls before that were never counted."""
    _, device = await ddi_device(limited, "ctrl-1")
    for _ in range(10):
        assert (await device.get()).status_code == 200, "correct tokens cost nothing"
    guesser = DdiDevice(limited.http, "ctrl-1", "not-the-token")
    answers = [(await guesser.get()).status_code for _ in range(6)]
    assert answers == [401] * 5 + [429]
    refused = await device.get()
    assert refused.status_code == 429, "the address is out of attempts for a while"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"


async def test_mender_auth_requests_share_the_auth_limits(limited: Server) -> None:
    """Mender's auth_requests count like POST /auth: per identity, then per address."""
    device = MenderDevice(limited.http, {"mac": "00:11:22:33:44:55"}, key_kind="ed25519")
    answers = [(await device.auth()).status_code for _ in range(3)]
    assert answers == [401, 401, 429], "pending twice, then the identity's budget is gone"
    others = [
        (await MenderDevice(limited.http, {"mac": f"mac-{i}"}, key_kind="ed25519").auth())
        for i in range(3)
    ]
    assert [r.status_code for r in others] == [401, 401, 429], "5 from this address in all"
    assert "address" in others[-1].json()["error"]["message"]
