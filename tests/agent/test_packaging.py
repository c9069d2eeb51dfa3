"""What ships to a board: the sample agent.toml documents every option and loads; the
systemd unit runs the dependency-light entry point with the watchdog on."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

from fleetcast.agent import AgentConfig
from fleetcast.agent.config import (
    AgentLimits,
    BootloaderConfig,
    HealthConfig,
    InstallerConfig,
    ModulesConfig,
    TrustConfig,
)
from tests.agent.boards import PACKAGING

EXAMPLE = PACKAGING / "agent.toml.example"


def _mentioned(text: str, section: str) -> set[str]:
    """Keys set or shown commented out (``# key = ...``) in ``[section]`` ('' = top level)."""
    current, keys = "", set()
    for line in text.splitlines():
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            current = header.group(1)
            continue
        key = re.match(r"^#? ?(\w+) = ", line)
        if key and current == section:
            keys.add(key.group(1))
    return keys


def test_example_loads() -> None:
    config = AgentConfig.load(EXAMPLE)
    assert config.bootloader.type == "uboot" and config.health.systemd


def test_example_documents_every_option() -> None:
    text = EXAMPLE.read_text()
    sections = {
        "bootloader": {f.name for f in fields(BootloaderConfig)} - {"trial_file"},
        "installer": {f.name for f in fields(InstallerConfig)},
        "modules": {f.name for f in fields(ModulesConfig)},
        "health": {f.name for f in fields(HealthConfig)},
        "limits": {f.name for f in fields(AgentLimits)},
        "reboot": {"command"},
        "slots": {"a", "b"},
        "trust": {f.name for f in fields(TrustConfig)},
    }
    for section, names in sections.items():
        assert names <= _mentioned(text, section), (section, names - _mentioned(text, section))
    tables = {"identity", "attributes", *sections}
    top = {f.name for f in fields(AgentConfig)} - tables
    assert top <= _mentioned(text, ""), top - _mentioned(text, "")
    # Uncommenting every commented line still gives valid TOML (no typos hide there).
    tomllib.loads(re.sub(r"^# (\w+ = )", r"\1", text, flags=re.M).replace("[attributes]", "[x]"))


def test_systemd_unit_runs_the_agent_module_with_a_watchdog() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(PACKAGING / "systemd" / "fleetcast-agent.service")
    service = unit["Service"]
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    argv = service["ExecStart"].split()
    assert argv[1:3] == ["-m", "fleetcast.agent"] and argv[-1] == "/etc/fleetcast/agent.toml"


def test_agent_module_entry_point_refuses_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text("server_url = 3\n")
    out = subprocess.run(
        [sys.executable, "-m", "fleetcast.agent", "--config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2 and "server_url" in out.stderr
