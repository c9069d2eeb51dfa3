"""What the README shows a user must actually work."""

from __future__ import annotations

import re
from pathlib import Path

from fleetcast.agent import AgentConfig

README = Path(__file__).parents[1] / "README.md"


def test_the_readme_agent_config_is_a_valid_config(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README shows an agent.toml"
    path = tmp_path / "agent.toml"
    path.write_text(blocks[0])
    config = AgentConfig.load(path)
    assert config.device_type == "acme-gw"
    assert config.health.commands


def test_the_readme_shows_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
