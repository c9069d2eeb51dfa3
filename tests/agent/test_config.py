"""Agent configuration: a good file loads; every bad key is named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetcast.agent import AgentConfig, AgentLimits, SimulatedDevice
from fleetcast.exceptions import ValidationError

GOOD = """
server_url = "http://127.0.0.1:8000/"
device_type = "acme-gw"
state_dir = "state"
trusted_keys = ["vendor.pub"]
long_poll = 10

[identity]
serial = "SN-1"

[bootloader]
type = "simulated"
env_file = "uboot.env"

[slots]
a = "slot-a.img"
b = "/dev/mmcblk0p3"

[health]
commands = [["true"], ["systemctl", "is-system-running"]]
timeout = 5

[limits]
max_retries = 3
backoff_base = 2
"""


def _load(tmp_path: Path, text: str) -> AgentConfig:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return AgentConfig.load(path)


def test_good_config(tmp_path: Path) -> None:
    config = _load(tmp_path, GOOD)
    assert config.server_url == "http://127.0.0.1:8000"
    assert config.state_dir == tmp_path / "state"
    assert config.trusted_keys == [tmp_path / "vendor.pub"]
    assert config.slots.b == Path("/dev/mmcblk0p3")
    assert config.health.commands == (("true",), ("systemctl", "is-system-running"))
    assert config.limits.max_retries == 3 and config.limits.backoff_base == 2.0
    assert config.limits.request_timeout == AgentLimits().request_timeout
    assert config.poll_interval == 30 and config.long_poll == 10


def test_to_toml_round_trips(tmp_path: Path) -> None:
    config = _load(tmp_path, GOOD)
    assert _load(tmp_path / "..", config.to_toml()) == config


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda t: t.replace('device_type = "acme-gw"\n', ""), "device_type"),
        (lambda t: t.replace("long_poll = 10", "long_poll = 99"), "long_poll"),
        (lambda t: t.replace("long_poll = 10", 'long_poll = "10"'), "long_poll"),
        (lambda t: t.replace('type = "simulated"', 'type = "lilo"'), "bootloader.type"),
        (lambda t: t.replace('env_file = "uboot.env"\n', ""), "bootloader.env_file"),
        (lambda t: t.replace('["true"], ', '["true"], [], '), "health.commands[1]"),
        (lambda t: t.replace("max_retries = 3", "max_retries = 0"), "limits.max_retries"),
        (lambda t: t.replace("max_retries = 3", "max_retries = 2.5"), "limits.max_retries"),
        (lambda t: t.replace("max_retries = 3", "max_retry = 3"), "limits.max_retry"),
        (lambda t: t + "poll_intervall = 3\n", "poll_intervall"),
        (lambda t: t.replace('serial = "SN-1"', "serial = 1"), "identity.serial"),
        (lambda t: t.replace('"http://127.0.0.1:8000/"', '"ftp://x"'), "server_url"),
        (lambda t: t.replace('["vendor.pub"]', "[]"), "trusted_keys"),
        (lambda t: t.replace('b = "/dev/mmcblk0p3"\n', ""), "slots.b"),
    ],
)
def test_bad_key_is_named(tmp_path: Path, edit: object, key: str) -> None:
    """An operator's typo or wrong type: the error names the key to fix."""
    with pytest.raises(ValidationError, match=key.replace("[", r"\[").replace("]", r"\]")):
        _load(tmp_path, edit(GOOD))  # type: ignore[operator]


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not valid TOML"):
        _load(tmp_path, "server_url = ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read"):
        AgentConfig.load(tmp_path / "nope.toml")


def test_simulated_device_writes_a_loadable_config(tmp_path: Path) -> None:
    pub = tmp_path / "vendor.pub"
    pub.write_text("unused here")
    device = SimulatedDevice.create(
        tmp_path / "dev",
        server_url="http://localhost:8000",
        device_type="acme-gw",
        identity={"serial": "SN-9", "mac": "00:11"},
        image=b"image",
        artifact_name="acme-fw",
        artifact_version="1.0.0",
        trusted_keys=[pub],
        health_commands=[["true"]],
        long_poll=5,
        poll_interval=1,
        enrollment_token="tok",
    )
    config = device.config
    assert config.identity == {"serial": "SN-9", "mac": "00:11"}
    assert config.enrollment_token == "tok"
    assert config.health.commands == (("true",),)
    assert device.booted_slot() == "a"
    assert device.installed() == ("acme-fw", "1.0.0")
    assert device.slot_bytes("a") == b"image" and device.slot_bytes("b") == b""


def test_files_roots(tmp_path: Path) -> None:
    """files_roots is optional (any absolute dest), must list absolute paths, and round-trips."""
    assert _load(tmp_path, GOOD).files_roots == ()
    config = _load(tmp_path, 'files_roots = ["/etc/acme", "/var/lib/acme"]\n' + GOOD)
    assert config.files_roots == (Path("/etc/acme"), Path("/var/lib/acme"))
    assert _load(tmp_path / "..", config.to_toml()) == config
    with pytest.raises(ValidationError, match="files_roots"):
        _load(tmp_path, 'files_roots = ["etc/acme"]\n' + GOOD)


BOARD = GOOD.replace(
    '[bootloader]\ntype = "simulated"\nenv_file = "uboot.env"',
    '[bootloader]\ntype = "uboot"\nfw_env_config = "/etc/fw_env.config"\n\n'
    '[installer]\ntype = "swupdate"\nargs = ["-k", "/etc/swupdate.pem"]\n\n'
    '[modules]\ndir = "/usr/lib/fleetcast/modules"\ntimeout = 60\n',
).replace("timeout = 5", "timeout = 5\nsystemd = true\nserver = true\nwatchdog = 120")


def test_board_options_load_and_round_trip(tmp_path: Path) -> None:
    config = _load(tmp_path, BOARD)
    assert config.bootloader.type == "uboot"
    assert config.bootloader.fw_env_config == Path("/etc/fw_env.config")
    assert config.installer.type == "swupdate" and config.installer.args == (
        "-k",
        "/etc/swupdate.pem",
    )
    assert config.modules.timeout == 60
    assert config.health.systemd and config.health.server and config.health.watchdog == 120
    assert _load(tmp_path / "..", config.to_toml()) == config


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda t: t.replace('type = "swupdate"', 'type = "mender"'), "installer.type"),
        (lambda t: t.replace('type = "swupdate"', 'type = "rauc"'), "installer.type 'rauc'"),
        (lambda t: t.replace('type = "uboot"', 'type = "rauc"'), "installer.type 'rauc'"),
        (lambda t: t.replace("systemd = true", "systemd = 1"), "health.systemd"),
        (lambda t: t.replace("watchdog = 120", "watchdog = 0"), "health.watchdog"),
        (lambda t: t.replace("timeout = 60", "timeout = -1"), "modules.timeout"),
        (lambda t: t.replace("[modules]", "[modules]\nhandlers = 1"), "modules.handlers"),
    ],
)
def test_bad_board_option_is_named(tmp_path: Path, edit: object, key: str) -> None:
    with pytest.raises(ValidationError, match=key.replace(".", r"\.")):
        _load(tmp_path, edit(BOARD))  # type: ignore[operator]


def test_rauc_bootloader_keeps_its_trial_record_in_the_state_dir(tmp_path: Path) -> None:
    text = BOARD.replace('type = "uboot"', 'type = "rauc"').replace(
        'type = "swupdate"', 'type = "rauc"'
    )
    config = _load(tmp_path, text)
    assert config.bootloader.trial_file == tmp_path / "state" / "rauc-trial.json"
