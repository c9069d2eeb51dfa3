"""Semantic versions order the way operators expect, and ranges gate installs."""

from __future__ import annotations

import pytest

from fleetcast.core.versions import Version, VersionRange
from fleetcast.exceptions import ValidationError


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.0.0", "1.0.1"),
        ("1.9.0", "1.10.0"),
        ("1.0.0-alpha", "1.0.0"),
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-beta"),
        ("1.0.0-beta.2", "1.0.0-beta.11"),
        ("1.0.0-rc.1", "1.0.0"),
    ],
)
def test_semver_precedence(lower: str, higher: str) -> None:
    assert Version.parse(lower) < Version.parse(higher)
    assert not Version.parse(higher) < Version.parse(lower)


def test_build_metadata_is_ignored_for_ordering_but_kept_in_text() -> None:
    v = Version.parse("1.2.3+build.7")
    assert v == Version.parse("1.2.3")
    assert str(v) == "1.2.3+build.7"


@pytest.mark.parametrize("text", ["1.0", "01.0.0", "1.0.0-", "v1.0.0", "", "1.0.0.0", "a.b.c"])
def test_invalid_versions_are_rejected_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValidationError, match="not a semantic version"):
        Version.parse(text)


def test_ranges_are_conjunctions() -> None:
    r = VersionRange.parse(">=1.0.0, <2.0.0")
    assert r.contains(Version.parse("1.0.0"))
    assert r.contains(Version.parse("1.99.0"))
    assert not r.contains(Version.parse("2.0.0"))
    assert not r.contains(Version.parse("0.9.9"))
    assert str(r) == ">=1.0.0,<2.0.0"


def test_star_matches_everything() -> None:
    assert VersionRange.parse("*").contains(Version.parse("0.0.1"))


@pytest.mark.parametrize("text", [">=", "~1.0.0", ">=1.0.0,,<2.0.0", "=>1.0.0"])
def test_malformed_ranges_are_rejected(text: str) -> None:
    with pytest.raises(ValidationError):
        VersionRange.parse(text)
