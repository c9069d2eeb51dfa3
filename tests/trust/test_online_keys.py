"""Reading the server's online keys: what a root must list for the online roles."""

from __future__ import annotations

import pytest

from fleetcast.exceptions import ValidationError
from fleetcast.trust.offline import OnlineKeys
from tests.trust.tufrepo import OnlineSigner


def test_the_server_answer_round_trips_and_keeps_the_server_key_ids() -> None:
    online = OnlineSigner()
    raw = {r: {"keyid": f"id-{r}", **s.public_key.to_dict()} for r, s in online.signers.items()}
    keys = OnlineKeys.from_dict(raw)
    assert keys.get("snapshot").keyid == "id-snapshot"
    assert OnlineKeys.from_dict(keys.to_dict()) == keys
    # Without a keyid, securesystemslib's default one (what the server computes).
    plain = OnlineKeys.from_dict(online.keys_json())
    assert plain.director.keyid == online.signers["director"].public_key.keyid


def test_a_pending_key_is_the_one_a_new_root_lists() -> None:
    online = OnlineSigner()
    active = online.signers["timestamp"].public_key.to_dict()
    pending_signer = online.rotate("timestamp")
    pending = pending_signer.public_key.to_dict()
    raw = {**online.keys_json(), "timestamp": {"active": active, "pending": pending}}
    assert OnlineKeys.from_dict(raw).timestamp.keyid == pending_signer.public_key.keyid


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"director": None}, "no 'director' key"),
        ({"snapshot": {"keytype": "rsa", "scheme": "rsassa-pss-sha256", "keyval": {}}}, "ed25519"),
        ({"timestamp": {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": "zz"}}},
         "bad ed25519 public key"),
    ],
)  # fmt: skip
def test_anything_else_is_refused(change: dict[str, object], message: str) -> None:
    raw = {**OnlineSigner().keys_json(), **change}
    with pytest.raises(ValidationError, match=message):
        OnlineKeys.from_dict(raw)
    with pytest.raises(ValidationError):
        OnlineKeys.from_dict(["not", "an", "object"])
