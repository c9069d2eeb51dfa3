"""SWUpdate as the slot writer; the agent's bootloader backend keeps the boot switch.

With ``installer.type = "swupdate"`` a ``rootfs-image`` payload is a ``.swu``
(``meta.format = "swu"``). Fleetcast verifies it against the signed manifest
while it downloads it into the spool directory; then::

    swupdate -i <spool>/update.swu -e <installer.swupdate_select[slot]> -M -m <installer.args>

SWUpdate checks the ``.swu`` once more (its CMS signature with ``-k``, the
hashes in ``sw-description``, the hardware revision with ``-H``) and writes
the images of the selected set (``copy1`` for slot ``a``, ``copy2`` for slot
``b`` by default) into the inactive slot.

``-M -m`` turn off SWUpdate's own bootloader markers (``ustate``,
``recovery_status``): arming, committing and rolling back the trial are the
agent's U-Boot or GRUB backend's job, so there is one owner of the boot
switch. SWUpdate's "mark good" step (``ustate`` back to 0 after a good boot)
is therefore the agent's ``commit``, and its "mark bad" the agent's
``rollback``.

Exit status 0 means the images are written; anything else is reported as a
failed update with SWUpdate's last output lines in the log tail, before any
trial is armed. SWUpdate works in ``$TMPDIR`` and removes what it extracts
there, so the agent gives it a private directory next to the spool.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Final

from fleetcast.agent.installers._check import require_image_format
from fleetcast.agent.tooling import run_tool
from fleetcast.core.manifest import Manifest
from fleetcast.exceptions import DeviceStateError

SWU_FORMAT: Final = "swu"


class SwupdateInstaller:
    """Hands a verified ``.swu`` to ``swupdate -i``.

    Args:
        select: the ``-e`` selection that writes slot ``a`` and the one for ``b``.
        spool: where the ``.swu`` is downloaded.
        timeout: seconds ``swupdate`` may take.
        args: extra arguments (``-k``, ``-H``, ``-f``...).
    """

    def __init__(
        self,
        *,
        select: tuple[str, str],
        spool: Path,
        timeout: float,
        args: tuple[str, ...] = (),
    ) -> None:
        self.select = select
        self.spool = spool
        self.timeout = timeout
        self.args = args

    def check(self, manifest: Manifest) -> None:
        """Raises: IncompatibleError: the image payload is not a ``.swu``."""
        require_image_format(manifest, SWU_FORMAT, "SWUpdate")

    def target(self, slot: str) -> Path:
        """The spool file the verified ``.swu`` is streamed into."""
        return self.spool / "update.swu"

    @property
    def _tmpdir(self) -> Path:
        return self.spool / "swupdate-tmp"

    def write(self, swu: Path, slot: str, log: Callable[[str], None]) -> None:
        """Run ``swupdate -i`` for the selection that writes ``slot``.

        Raises:
            DeviceStateError: SWUpdate failed or refused the image (the message
                and the log tail say why).
        """
        selection = self.select[0 if slot == "a" else 1]
        try:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir.mkdir(mode=0o700, parents=True)
        except OSError as e:
            raise DeviceStateError(f"cannot create {self._tmpdir}: {e}") from e
        argv = ["swupdate", "-i", str(swu), "-e", selection, "-M", "-m", *self.args]
        try:
            result = run_tool(argv, timeout=self.timeout, env={"TMPDIR": str(self._tmpdir)})
        finally:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        for line in result.tail():
            log(line)
        if not result.ok:
            raise DeviceStateError(f"SWUpdate refused the image: {result.describe()}")
        log(f"SWUpdate wrote {selection} into slot {slot}")

    def cleanup(self) -> None:
        """Remove the spooled ``.swu``.

        Raises:
            DeviceStateError: it cannot be removed.
        """
        try:
            self.target("a").unlink(missing_ok=True)
        except OSError as e:
            raise DeviceStateError(f"cannot remove the spooled image: {e}") from e


__all__ = ["SWU_FORMAT", "SwupdateInstaller"]
