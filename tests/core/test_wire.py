"""Device-API wire objects reject malformed input with clear messages."""

from __future__ import annotations

import pytest

from fleetcast.core.wire import (
    AuthRequest,
    DeviceUpdateStatus,
    Inventory,
    StatusReport,
)
from fleetcast.exceptions import ValidationError


def test_auth_request_round_trip() -> None:
    req = AuthRequest({"serial": "SN1"}, "acme-gw", "PEM", 1700000000, "tok")
    assert AuthRequest.from_dict(req.to_dict()) == req


@pytest.mark.parametrize(
    "data",
    [
        {"identity": {}, "device_type": "x", "public_key": "p", "timestamp": 1},
        {"identity": {"a": 1}, "device_type": "x", "public_key": "p", "timestamp": 1},
        {"identity": {"a": "b"}, "device_type": "", "public_key": "p", "timestamp": 1},
        {"identity": {"a": "b"}, "device_type": "x", "public_key": "p", "timestamp": "now"},
        [],
    ],
)
def test_bad_auth_requests(data: object) -> None:
    with pytest.raises(ValidationError):
        AuthRequest.from_dict(data)


def test_status_report_validation() -> None:
    report = StatusReport.from_dict({"status": "downloading", "progress": 40})
    assert report.status is DeviceUpdateStatus.DOWNLOADING
    assert not report.status.terminal
    assert DeviceUpdateStatus.ALREADY_INSTALLED.terminal
    with pytest.raises(ValidationError, match="status must be one of"):
        StatusReport.from_dict({"status": "exploded"})
    with pytest.raises(ValidationError, match="progress"):
        StatusReport.from_dict({"status": "downloading", "progress": 101})


def test_inventory_attributes_must_be_strings() -> None:
    with pytest.raises(ValidationError, match="attributes"):
        Inventory.from_dict({"device_type": "x", "attributes": {"ram": 512}})
