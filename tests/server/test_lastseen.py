"""Idle check-ins write nothing; last-seen times are flushed in batches."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select

from fleetcast.server.db.models import DeploymentDevice, Device
from tests.factories import BuiltArtifact
from tests.server.harness import Server


async def test_idle_polls_do_not_write_and_a_flush_records_last_seen(server: Server) -> None:
    devices = await server.fleet(3)
    state = server.state
    await state.last_seen.flush()  # logins recorded nothing here; start clean
    writes: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE")):
            writes.append(statement)

    sync_engine = state.db.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        for _ in range(5):
            for device in devices:
                response = await device.next()
                assert response.status_code == 200
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)
    assert writes == []
    # Logging in stamped last_seen_at just now, so within the granularity
    # nothing is even buffered: the flush has nothing to write.
    assert state.last_seen.pending == 0

    async with state.db.sessions() as session:
        await session.execute(Device.__table__.update().values(last_seen_at=None))
        await session.commit()
    # That write went behind the server's back: make it forget its idle answers
    # (and the last-seen times they carry), as a notification would.
    state.answers.invalidate(None)
    for device in devices:
        await device.next()
    assert state.last_seen.pending == 3
    assert await state.last_seen.flush() == 3
    async with state.db.sessions() as session:
        seen = (await session.scalars(select(Device.last_seen_at))).all()
    assert len(seen) == 3 and all(s is not None for s in seen)


async def test_downloads_are_booked_per_member_in_batches(
    server: Server, artifact: BuiltArtifact
) -> None:
    """Authorising a download writes nothing; the bytes sent are booked on the device's
    membership by the flush, and the management API sees them at once (it flushes
    this process's sums before answering)."""
    [member, outsider] = await server.fleet(2, device_type="acme-gw")
    uploaded = await server.upload(artifact)
    deployment = await server.deploy(
        uploaded["id"], target={"device_ids": [member.device_id]}, name="one"
    )
    assert await member.offer() is not None
    state = server.state
    await state.last_seen.flush()
    writes: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE")):
            writes.append(statement)

    path = f"/artifacts/{uploaded['id']}/download"
    sync_engine = state.db.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        assert (await member.get(path, headers={"Range": "bytes=0-99"})).status_code == 206
        assert (await member.get(path, headers={"Range": "bytes=100-"})).status_code == 206
        # Not a member: counted nowhere.
        assert (await outsider.get(path)).status_code == 200
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)
    assert writes == []
    assert state.last_seen.pending_downloads == 2

    status = await server.deployment(deployment["id"])
    assert status["bytes_shipped"] == uploaded["size"]
    assert status["bytes_full"] == uploaded["size"]
    assert state.last_seen.pending_downloads == 0

    # The background flush books later downloads the same way.
    assert (await member.get(path, headers={"Range": "bytes=10-19"})).status_code == 206
    await state.last_seen.flush()
    async with state.db.sessions() as session:
        shipped = await session.scalar(
            select(DeploymentDevice.bytes_shipped).where(
                DeploymentDevice.device_id == member.device_id
            )
        )
    assert shipped == uploaded["size"] + 10
