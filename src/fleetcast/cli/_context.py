"""State shared by every CLI command: output mode and how to reach the server."""

from __future__ import annotations

import os
from dataclasses import dataclass

import typer

from fleetcast.cli._api import ManagementClient
from fleetcast.cli._output import Output
from fleetcast.exceptions import UsageError


@dataclass
class CliState:
    output: Output
    url: str | None
    token: str | None

    def client(self) -> ManagementClient:
        """A management-API client from ``--url``/``--token`` or FLEETCAST_URL/FLEETCAST_TOKEN.

        Raises:
            UsageError: no token was given.
        """
        url = self.url or os.environ.get("FLEETCAST_URL") or "http://127.0.0.1:8080"
        token = self.token or os.environ.get("FLEETCAST_TOKEN")
        if not token:
            raise UsageError(
                "no API token: set FLEETCAST_TOKEN (printed by the server's first start) "
                "or pass --token"
            )
        return ManagementClient(url, token)


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


def change_status(ctx: typer.Context, kind: str, object_id: str, action: str) -> None:
    """POST ``/{kind}s/{id}/{action}`` and say the object's new status.

    Raises:
        ApiError: the server refused the change.
        TransportError: the server could not be reached.
    """
    st = state(ctx)
    with st.client() as client:
        changed = client.post(f"/{kind}s/{object_id}/{action}")
    if st.output.as_json:
        st.output.data(changed)
    else:
        st.output.message(f"{kind} {object_id} is now {changed.get('status')}")
