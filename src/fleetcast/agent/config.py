"""The agent's configuration: one TOML file, validated up front.

``AgentConfig.load(path)`` reads the file with :mod:`tomllib`, checks every
key and type, and resolves relative paths against the file's directory. An
error names the offending key (``bootloader.type``, ``health.commands[1]``)
so an operator can fix the file without reading code. Unknown keys are
errors too: a typo must not silently fall back to a default.

Every length, timeout and retry limit of the agent lives in
:class:`AgentLimits` (table ``[limits]``), in the spirit of python-tuf's
``UpdaterConfig``: the device side is bounded, and the bounds are in one place.

Example::

    server_url = "https://updates.example.com"
    device_type = "acme-gw"
    state_dir = "/var/lib/fleetcast"
    trusted_keys = ["/etc/fleetcast/vendor.pub"]
    poll_interval = 30
    long_poll = 25

    [identity]
    serial = "SN-0001"

    [bootloader]
    type = "simulated"
    env_file = "/var/lib/fleetcast/uboot.env"

    [slots]
    a = "/dev/mmcblk0p2"
    b = "/dev/mmcblk0p3"

    [health]
    commands = [["systemctl", "is-system-running", "--wait"]]
    timeout = 30

``mqtt_url`` (top level, optional, ``mqtt[s]://[user:password@]host[:port]``)
makes the agent subscribe to its check-in topic
(``{mqtt_topic_prefix}/devices/{device id}/check-in``, prefix default
``fleetcast``) and check in as soon as a notice arrives; with it, set
``long_poll = 0`` and a long ``poll_interval`` (say 3600) as the fallback.

``ca_bundle`` (top level, optional) is a PEM file of the certificate
authorities (or the server's own certificate) an ``https`` server must
present a certificate from; only those are trusted. Without it an ``https``
server is checked against the system's trust store.

``[trust]`` (optional) turns on TUF verification of every offer (ADR 0008,
:mod:`fleetcast.agent.trust`): ``image_root`` and ``director_root`` are the
initial root metadata files of the image and director repositories shipped
on the device; ``refresh_interval`` (seconds, default 3600) is how often an
idle agent refreshes them and sends a signed version report. With it,
``trusted_keys`` may be empty (the vendor's TUF targets keys then vouch for
every manifest)::

    [trust]
    image_root = "/etc/fleetcast/tuf/image-root.json"
    director_root = "/etc/fleetcast/tuf/director-root.json"
    refresh_interval = 3600

``decryption_keys`` (top level, optional) lists device-group X25519 private
keys (PKCS#8 PEM, from ``fleetcast keys generate --kind x25519``) for
encrypted payloads wrapped for a group (ADR 0008); the device's own X25519
key (``<state_dir>/device-x25519.key``) is always used as well, e.g.
``decryption_keys = ["/etc/fleetcast/acme-gw-group.key"]``.

``files_roots`` (top level, optional) restricts where ``files`` payloads
may install: each payload's ``dest`` must lie strictly inside one of these
absolute directories. Without it (the default) any absolute ``dest`` is
allowed, as the artifact is signed by a trusted vendor key; set it to
limit what a vendor key can overwrite, e.g.
``files_roots = ["/etc/acme", "/var/lib/acme"]``.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from fleetcast.exceptions import ValidationError

BOOTLOADER_TYPES: Final = ("simulated", "uboot", "grub", "rauc")
INSTALLER_TYPES: Final = ("fleetcast", "rauc", "swupdate")
SLOT_NAMES: Final = ("a", "b")


@dataclass(frozen=True)
class AgentLimits:
    """Every bound the agent applies, in one place.

    Attributes:
        max_manifest_size: largest update offer (``/next`` answer) accepted, bytes.
        max_response_size: largest other JSON answer accepted, bytes.
        request_timeout: seconds for one HTTP request (a long poll adds its wait).
        download_chunk: bytes read from the network per read call.
        checkpoint_interval: installed bytes between two resume checkpoints
            (each costs an fsync of the slot and of the journal).
        max_retries: attempts of one HTTP call before its failure is reported;
            also the TUF checks of one offer refused in a row before the
            refusal is reported (a damaged transfer looks like an attack).
        backoff_base: first retry delay, seconds; doubles on every attempt.
        backoff_cap: longest retry delay, seconds.
        max_download_attempts: interrupted downloads of one update (each resumes)
            before the update is reported failed.
        max_log_lines: lines kept in the journal's log tail (sent with a failure).
        script_timeout: seconds a ``script`` payload may run.
    """

    max_manifest_size: int = 1024 * 1024
    max_response_size: int = 256 * 1024
    request_timeout: float = 30.0
    download_chunk: int = 64 * 1024
    checkpoint_interval: int = 4 * 1024 * 1024
    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    max_download_attempts: int = 10
    max_log_lines: int = 100
    script_timeout: float = 600.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValidationError(f"limits.{f.name} must be a positive number, got {value!r}")
        if self.backoff_cap < self.backoff_base:
            raise ValidationError("limits.backoff_cap must not be smaller than limits.backoff_base")


@dataclass(frozen=True)
class BootloaderConfig:
    """Which bootloader backend holds the A/B switch and its boot counter.

    Attributes:
        type: ``simulated``, ``uboot`` (``fw_printenv``/``fw_setenv``),
            ``grub`` (``grub-editenv``) or ``rauc`` (RAUC owns the switch).
        env_file: the simulated bootloader's environment file.
        fw_env_config: U-Boot: the ``fw_env.config`` naming the environment
            (one line, or two for a redundant environment); ``None``: the
            tools' default, ``/etc/fw_env.config``.
        grubenv: GRUB: the environment block ``grub.cfg`` loads.
        cmdline: U-Boot and GRUB: where ``fleetcast.slot=a|b`` of the running
            system is read (the boot snippets put it on the kernel command line).
        rauc_conf: RAUC: its ``system.conf`` (``None``: RAUC's default).
        rauc_bootnames: RAUC: the ``bootname`` of the slot Fleetcast calls
            ``a`` and of the one it calls ``b``.
        trial_file: RAUC: where the agent records the trial it armed
            (always ``<state_dir>/rauc-trial.json``; not configurable).
        tool_timeout: seconds one call of a bootloader tool may take.
    """

    type: str = "simulated"
    env_file: Path | None = None
    fw_env_config: Path | None = None
    grubenv: Path = Path("/boot/grub/grubenv")
    cmdline: Path = Path("/proc/cmdline")
    rauc_conf: Path | None = None
    rauc_bootnames: tuple[str, str] = ("A", "B")
    trial_file: Path | None = None
    tool_timeout: float = 30.0


@dataclass(frozen=True)
class InstallerConfig:
    """Who writes a verified ``rootfs-image`` payload into the inactive slot.

    Attributes:
        type: ``fleetcast`` (the agent streams the image into the slot itself),
            ``rauc`` (the payload is a RAUC bundle handed to ``rauc install``) or
            ``swupdate`` (the payload is a ``.swu`` handed to ``swupdate -i``).
        args: extra arguments for the external tool (e.g. SWUpdate's
            ``-k /etc/swupdate/cert.pem -H board:1.0``).
        swupdate_select: SWUpdate: the ``-e software,mode`` selection that
            writes slot ``a`` and the one that writes slot ``b``.
        spool_dir: where an external installer's bundle is downloaded first
            (default: ``state_dir``); it needs room for one bundle.
        timeout: seconds the external installer may run.
    """

    type: str = "fleetcast"
    args: tuple[str, ...] = ()
    swupdate_select: tuple[str, str] = ("stable,copy1", "stable,copy2")
    spool_dir: Path | None = None
    timeout: float = 3600.0

    @property
    def external(self) -> bool:
        """Whether a tool other than the agent writes the slot."""
        return self.type != "fleetcast"


@dataclass(frozen=True)
class ModulesConfig:
    """Update modules: handler executables for ``module`` payloads.

    Attributes:
        dir: the directory holding one executable per handler name.
        timeout: seconds one handler call may take.
    """

    dir: Path = Path("/usr/lib/fleetcast/modules")
    timeout: float = 600.0


@dataclass(frozen=True)
class SlotsConfig:
    """The two root file system slots (block devices or image files)."""

    a: Path
    b: Path

    def path(self, slot: str) -> Path:
        """Return the path of slot ``"a"`` or ``"b"``."""
        return self.a if slot == "a" else self.b


@dataclass(frozen=True)
class HealthConfig:
    """Checks that must all pass on the new slot (or in-place update) before it is committed.

    Attributes:
        commands: argv lists; each must exit 0 within ``timeout``.
        timeout: seconds each command may take.
        systemd: also require ``systemctl is-system-running --wait`` to answer
            ``running`` (or ``degraded`` with ``allow_degraded``) within ``timeout``.
        allow_degraded: accept a ``degraded`` system (a unit failed).
        server: also require that the agent can authenticate with the server
            from the new system (network, clock, TLS and device key all work).
        watchdog: seconds the whole health phase may take; a check still
            running then is killed and the update counts as failed.
    """

    commands: tuple[tuple[str, ...], ...] = ()
    timeout: float = 30.0
    systemd: bool = False
    allow_degraded: bool = False
    server: bool = False
    watchdog: float = 600.0


@dataclass(frozen=True)
class TrustConfig:
    """TUF verification of offers (table ``[trust]``; ADR 0008, :mod:`fleetcast.agent.trust`).

    Attributes:
        image_root: initial root metadata of the image repository (shipped on
            the device; the trust anchor: newer roots are reached through the
            signed root chain and cached under ``<state_dir>/tuf/image``).
        director_root: initial root metadata of the director repository.
        refresh_interval: seconds between two refreshes (and signed version
            reports) of an idle agent; an offer always refreshes first.
    """

    image_root: Path | None = None
    director_root: Path | None = None
    refresh_interval: float = 3600.0

    @property
    def tuf(self) -> bool:
        """Whether offers are verified with TUF (both root files are configured)."""
        return self.image_root is not None and self.director_root is not None


@dataclass(frozen=True)
class RebootConfig:
    """How a real device reboots (ignored by the simulated bootloader)."""

    command: tuple[str, ...] = ("reboot",)


@dataclass(frozen=True)
class AgentConfig:
    """Everything the device agent needs to know, loaded from ``agent.toml``."""

    server_url: str
    device_type: str
    state_dir: Path
    trusted_keys: list[Path]
    identity: dict[str, str]
    bootloader: BootloaderConfig
    slots: SlotsConfig
    attributes: dict[str, str] = field(default_factory=dict)
    poll_interval: float = 30.0
    long_poll: int = 25
    enrollment_token: str | None = None
    health: HealthConfig = field(default_factory=HealthConfig)
    reboot: RebootConfig = field(default_factory=RebootConfig)
    limits: AgentLimits = field(default_factory=AgentLimits)
    files_roots: tuple[Path, ...] = ()
    mqtt_url: str | None = None
    mqtt_topic_prefix: str = "fleetcast"
    installer: InstallerConfig = field(default_factory=InstallerConfig)
    modules: ModulesConfig = field(default_factory=ModulesConfig)
    ca_bundle: Path | None = None
    trust: TrustConfig | None = None
    decryption_keys: tuple[Path, ...] = ()

    @property
    def tuf(self) -> bool:
        """Whether offers are verified with TUF (``[trust]`` names both root files)."""
        return self.trust is not None and self.trust.tuf

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        """Read and validate an agent configuration file.

        Raises:
            ValidationError: the file is missing, not TOML, or a key is invalid
                (the message names the key).
        """
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ValidationError(f"cannot read agent configuration {path}: {e}") from e
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ValidationError(f"{path} is not valid TOML: {e}") from e
        return cls.from_dict(data, base_dir=path.parent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base_dir: Path) -> AgentConfig:
        """Validate parsed TOML; relative paths are resolved against ``base_dir``.

        Raises:
            ValidationError: a key is missing, unknown or of the wrong type.
        """
        top = _Table(data, "", base_dir)
        top.only(
            "server_url",
            "device_type",
            "state_dir",
            "trusted_keys",
            "identity",
            "attributes",
            "poll_interval",
            "long_poll",
            "enrollment_token",
            "bootloader",
            "slots",
            "health",
            "reboot",
            "limits",
            "files_roots",
            "mqtt_url",
            "mqtt_topic_prefix",
            "installer",
            "modules",
            "ca_bundle",
            "trust",
            "decryption_keys",
        )
        server_url = top.string("server_url")
        if not server_url.startswith(("http://", "https://")):
            raise ValidationError("server_url must start with http:// or https://")
        identity = top.str_map("identity")
        if not identity:
            raise ValidationError("identity must have at least one attribute (e.g. serial)")
        long_poll = top.integer("long_poll", 25)
        if not 0 <= long_poll <= 60:
            raise ValidationError("long_poll must be between 0 and 60 seconds")
        poll_interval = top.number("poll_interval", 30.0)
        if poll_interval < 0:
            raise ValidationError("poll_interval must not be negative")
        mqtt_url = top.opt_string("mqtt_url")
        if mqtt_url is not None and not mqtt_url.startswith(("mqtt://", "mqtts://")):
            raise ValidationError("mqtt_url must start with mqtt:// or mqtts://")
        mqtt_topic_prefix = top.opt_string("mqtt_topic_prefix") or "fleetcast"
        trusted = top.paths("trusted_keys")
        has_trust = "trust" in top.keys()  # noqa: SIM118 (a _Table, not a dict)
        trust = _trust(top.table("trust", required=False)) if has_trust else None
        if not trusted and not (trust is not None and trust.tuf):
            raise ValidationError(
                "trusted_keys must list at least one vendor public key "
                "(it may be empty only with TUF: [trust] image_root and director_root)"
            )

        state_dir = top.path("state_dir")
        bootloader = _bootloader(top.table("bootloader"), state_dir)
        installer = _installer(top.table("installer", required=False), bootloader.type)
        modules_table = top.table("modules", required=False)
        modules_table.only("dir", "timeout")
        modules = ModulesConfig(
            dir=modules_table.opt_path("dir") or ModulesConfig.dir,
            timeout=modules_table.positive("timeout", ModulesConfig.timeout),
        )

        slots = top.table("slots")
        slots.only(*SLOT_NAMES)
        health = top.table("health", required=False)
        health.only("commands", "timeout", "systemd", "allow_degraded", "server", "watchdog")
        reboot = top.table("reboot", required=False)
        reboot.only("command")
        limits = top.table("limits", required=False)
        limits.only(*(f.name for f in fields(AgentLimits)))
        limit_values: dict[str, Any] = {}
        for f in fields(AgentLimits):
            if f.name in limits.keys():  # noqa: SIM118 (a _Table, not a dict)
                limit_values[f.name] = (
                    limits.integer(f.name, 0)
                    if isinstance(f.default, int)
                    else limits.number(f.name, None)
                )

        return cls(
            server_url=server_url.rstrip("/"),
            device_type=top.string("device_type"),
            state_dir=state_dir,
            trusted_keys=trusted,
            identity=identity,
            attributes=top.str_map("attributes", required=False),
            poll_interval=poll_interval,
            long_poll=long_poll,
            enrollment_token=top.opt_string("enrollment_token"),
            bootloader=bootloader,
            slots=SlotsConfig(a=slots.path("a"), b=slots.path("b")),
            health=HealthConfig(
                commands=health.argv_list("commands"),
                timeout=health.positive("timeout", HealthConfig.timeout),
                systemd=health.boolean("systemd", False),
                allow_degraded=health.boolean("allow_degraded", False),
                server=health.boolean("server", False),
                watchdog=health.positive("watchdog", HealthConfig.watchdog),
            ),
            reboot=RebootConfig(command=reboot.argv("command", ("reboot",))),
            limits=AgentLimits(**limit_values),
            files_roots=top.absolute_paths("files_roots"),
            mqtt_url=mqtt_url,
            mqtt_topic_prefix=mqtt_topic_prefix,
            installer=installer,
            modules=modules,
            ca_bundle=top.opt_path("ca_bundle"),
            trust=trust,
            decryption_keys=tuple(top.paths("decryption_keys"))
            if "decryption_keys" in top.keys()  # noqa: SIM118 (a _Table, not a dict)
            else (),
        )

    def to_toml(self) -> str:
        """Render this configuration as TOML that :meth:`load` reads back."""
        lines = [
            f"server_url = {_q(self.server_url)}",
            f"device_type = {_q(self.device_type)}",
            f"state_dir = {_q(str(self.state_dir))}",
            f"trusted_keys = [{', '.join(_q(str(p)) for p in self.trusted_keys)}]",
            f"poll_interval = {float(self.poll_interval)!r}",
            f"long_poll = {self.long_poll}",
        ]
        if self.enrollment_token is not None:
            lines.append(f"enrollment_token = {_q(self.enrollment_token)}")
        if self.ca_bundle is not None:
            lines.append(f"ca_bundle = {_q(str(self.ca_bundle))}")
        if self.files_roots:
            lines.append(f"files_roots = [{', '.join(_q(str(p)) for p in self.files_roots)}]")
        if self.decryption_keys:
            keys = ", ".join(_q(str(p)) for p in self.decryption_keys)
            lines.append(f"decryption_keys = [{keys}]")
        if self.mqtt_url is not None:
            lines.append(f"mqtt_url = {_q(self.mqtt_url)}")
            lines.append(f"mqtt_topic_prefix = {_q(self.mqtt_topic_prefix)}")
        lines += ["", "[identity]", *(f"{_q(k)} = {_q(v)}" for k, v in self.identity.items())]
        lines += ["", "[attributes]", *(f"{_q(k)} = {_q(v)}" for k, v in self.attributes.items())]
        boot = self.bootloader
        lines += ["", "[bootloader]", f"type = {_q(boot.type)}"]
        for key in ("env_file", "fw_env_config", "rauc_conf"):
            value = getattr(boot, key)
            if value is not None:
                lines.append(f"{key} = {_q(str(value))}")
        lines += [
            f"grubenv = {_q(str(boot.grubenv))}",
            f"cmdline = {_q(str(boot.cmdline))}",
            f"rauc_bootnames = {_argv(boot.rauc_bootnames)}",
            f"tool_timeout = {float(boot.tool_timeout)!r}",
        ]
        inst = self.installer
        lines += ["", "[installer]", f"type = {_q(inst.type)}", f"args = {_argv(inst.args)}"]
        lines.append(f"swupdate_select = {_argv(inst.swupdate_select)}")
        if inst.spool_dir is not None:
            lines.append(f"spool_dir = {_q(str(inst.spool_dir))}")
        lines.append(f"timeout = {float(inst.timeout)!r}")
        lines += ["", "[modules]", f"dir = {_q(str(self.modules.dir))}"]
        lines.append(f"timeout = {float(self.modules.timeout)!r}")
        lines += ["", "[slots]", f"a = {_q(str(self.slots.a))}", f"b = {_q(str(self.slots.b))}"]
        health = self.health
        commands = ", ".join(_argv(c) for c in health.commands)
        lines += ["", "[health]", f"commands = [{commands}]"]
        lines.append(f"timeout = {float(health.timeout)!r}")
        for key in ("systemd", "allow_degraded", "server"):
            lines.append(f"{key} = {'true' if getattr(health, key) else 'false'}")
        lines.append(f"watchdog = {float(health.watchdog)!r}")
        if self.trust is not None:
            lines += ["", "[trust]"]
            for key in ("image_root", "director_root"):
                value = getattr(self.trust, key)
                if value is not None:
                    lines.append(f"{key} = {_q(str(value))}")
            lines.append(f"refresh_interval = {float(self.trust.refresh_interval)!r}")
        lines += ["", "[reboot]", f"command = {_argv(self.reboot.command)}", "", "[limits]"]
        lines += [f"{f.name} = {getattr(self.limits, f.name)!r}" for f in fields(AgentLimits)]
        return "\n".join(lines) + "\n"


def _bootloader(boot: _Table, state_dir: Path) -> BootloaderConfig:
    boot.only(
        "type",
        "env_file",
        "fw_env_config",
        "grubenv",
        "cmdline",
        "rauc_conf",
        "rauc_bootnames",
        "tool_timeout",
    )
    boot_type = boot.string("type", "simulated")
    if boot_type not in BOOTLOADER_TYPES:
        raise ValidationError(
            f"bootloader.type {boot_type!r} is not supported (one of {BOOTLOADER_TYPES})"
        )
    env_file = boot.path("env_file") if boot_type == "simulated" else boot.opt_path("env_file")
    bootnames = boot.argv("rauc_bootnames", BootloaderConfig.rauc_bootnames)
    if len(bootnames) != 2 or bootnames[0] == bootnames[1]:
        raise ValidationError("bootloader.rauc_bootnames must name two different slots")
    return BootloaderConfig(
        type=boot_type,
        env_file=env_file,
        fw_env_config=boot.opt_path("fw_env_config"),
        grubenv=boot.opt_path("grubenv") or BootloaderConfig.grubenv,
        cmdline=boot.opt_path("cmdline") or BootloaderConfig.cmdline,
        rauc_conf=boot.opt_path("rauc_conf"),
        rauc_bootnames=(bootnames[0], bootnames[1]),
        trial_file=state_dir / "rauc-trial.json" if boot_type == "rauc" else None,
        tool_timeout=boot.positive("tool_timeout", BootloaderConfig.tool_timeout),
    )


def _trust(table: _Table) -> TrustConfig:
    table.only("image_root", "director_root", "refresh_interval")
    image_root, director_root = table.opt_path("image_root"), table.opt_path("director_root")
    if (image_root is None) != (director_root is None):
        raise ValidationError("trust.image_root and trust.director_root go together")
    return TrustConfig(
        image_root=image_root,
        director_root=director_root,
        refresh_interval=table.positive("refresh_interval", TrustConfig.refresh_interval),
    )


def _installer(table: _Table, boot_type: str) -> InstallerConfig:
    table.only("type", "args", "swupdate_select", "spool_dir", "timeout")
    kind = table.string("type", "fleetcast")
    if kind not in INSTALLER_TYPES:
        raise ValidationError(
            f"installer.type {kind!r} is not supported (one of {INSTALLER_TYPES})"
        )
    # RAUC marks slots active and good itself: it must own the boot switch, and
    # nothing else may (two owners of one switch fight each other).
    if (kind == "rauc") != (boot_type == "rauc"):
        raise ValidationError(
            "installer.type 'rauc' and bootloader.type 'rauc' go together "
            f"(got installer {kind!r}, bootloader {boot_type!r})"
        )
    select = table.argv("swupdate_select", InstallerConfig.swupdate_select)
    if len(select) != 2:
        raise ValidationError("installer.swupdate_select must list two selections (slot a, slot b)")
    args = table._get("args", False)
    if args is not None and (
        not isinstance(args, list) or not all(isinstance(a, str) for a in args)
    ):
        raise ValidationError("installer.args must be a list of strings")
    return InstallerConfig(
        type=kind,
        args=tuple(args or ()),
        swupdate_select=(select[0], select[1]),
        spool_dir=table.opt_path("spool_dir"),
        timeout=table.positive("timeout", InstallerConfig.timeout),
    )


def _q(text: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(text, ensure_ascii=False)


def _argv(argv: tuple[str, ...]) -> str:
    return "[" + ", ".join(_q(a) for a in argv) + "]"


class _Table:
    """A TOML table being validated; every error names the dotted key."""

    def __init__(self, data: object, prefix: str, base_dir: Path) -> None:
        if not isinstance(data, dict):
            raise ValidationError(f"{prefix.rstrip('.') or 'configuration'} must be a table")
        self._data: dict[str, Any] = data
        self._prefix = prefix
        self._base = base_dir

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def keys(self) -> list[str]:
        return list(self._data)

    def only(self, *allowed: str) -> None:
        unknown = sorted(set(self._data) - set(allowed))
        if unknown:
            raise ValidationError(f"unknown configuration key {self._key(unknown[0])!r}")

    def _get(self, key: str, required: bool) -> Any:
        if key not in self._data:
            if required:
                raise ValidationError(f"missing configuration key {self._key(key)!r}")
            return None
        return self._data[key]

    def table(self, key: str, *, required: bool = True) -> _Table:
        value = self._get(key, required)
        return _Table({} if value is None else value, f"{self._key(key)}.", self._base)

    def string(self, key: str, default: str | None = None) -> str:
        value = self._get(key, default is None)
        if value is None:
            assert default is not None
            return default
        if not isinstance(value, str) or not value:
            raise ValidationError(f"{self._key(key)} must be a non-empty string")
        return value

    def opt_string(self, key: str) -> str | None:
        value = self._get(key, False)
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"{self._key(key)} must be a string")
        return value

    def number(self, key: str, default: float | None) -> float:
        value = self._get(key, default is None)
        if value is None:
            assert default is not None
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"{self._key(key)} must be a number")
        return float(value)

    def positive(self, key: str, default: float) -> float:
        value = self.number(key, default)
        if value <= 0:
            raise ValidationError(f"{self._key(key)} must be a positive number")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ValidationError(f"{self._key(key)} must be true or false")
        return value

    def integer(self, key: str, default: int) -> int:
        value = self._get(key, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"{self._key(key)} must be an integer")
        return value

    def path(self, key: str) -> Path:
        return self._base / self.string(key)

    def opt_path(self, key: str) -> Path | None:
        value = self.opt_string(key)
        return None if value is None else self._base / value

    def paths(self, key: str) -> list[Path]:
        value = self._get(key, True)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValidationError(f"{self._key(key)} must be a list of file paths")
        return [self._base / v for v in value]

    def absolute_paths(self, key: str) -> tuple[Path, ...]:
        value = self._get(key, False)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(
            isinstance(v, str) and v.startswith("/") for v in value
        ):
            raise ValidationError(f"{self._key(key)} must be a list of absolute directory paths")
        return tuple(Path(v) for v in value)

    def str_map(self, key: str, *, required: bool = True) -> dict[str, str]:
        value = self._get(key, required)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValidationError(f"{self._key(key)} must be a table of strings")
        for k, v in value.items():
            if not isinstance(v, str):
                raise ValidationError(f"{self._key(key)}.{k} must be a string")
        return dict(value)

    def argv(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
            raise ValidationError(f"{self._key(key)} must be a non-empty list of strings (argv)")
        return tuple(value)

    def argv_list(self, key: str) -> tuple[tuple[str, ...], ...]:
        value = self._get(key, False)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise ValidationError(f"{self._key(key)} must be a list of commands (argv lists)")
        out: list[tuple[str, ...]] = []
        for i, argv in enumerate(value):
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise ValidationError(
                    f"{self._key(key)}[{i}] must be a non-empty list of strings (argv)"
                )
            out.append(tuple(argv))
        return tuple(out)


__all__ = [
    "BOOTLOADER_TYPES",
    "INSTALLER_TYPES",
    "AgentConfig",
    "AgentLimits",
    "BootloaderConfig",
    "HealthConfig",
    "InstallerConfig",
    "ModulesConfig",
    "RebootConfig",
    "SlotsConfig",
    "TrustConfig",
]
