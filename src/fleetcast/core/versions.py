"""Semantic versions (semver.org 2.0.0) and version ranges.

A range is a comma-separated list of constraints that must all hold, for
example ``">=1.0.0,<2.0.0"``; ``"*"`` matches every version. Operators:
``==``, ``!=``, ``>=``, ``<=``, ``>``, ``<``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from fleetcast.exceptions import ValidationError

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$",
    # ASCII: semver digits are 0-9, not any Unicode digit (int() would accept "1٣" as 13).
    re.ASCII,
)
_CONSTRAINT = re.compile(r"^\s*(==|!=|>=|<=|>|<)\s*(\S+)\s*$", re.ASCII)


@total_ordering
@dataclass(frozen=True)
class Version:
    """A semantic version; ordering follows semver precedence (build metadata ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``text`` as a semantic version.

        Raises:
            ValidationError: ``text`` is not a semantic version.
        """
        match = _SEMVER.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValidationError(f"not a semantic version: {text!r} (expected e.g. 1.2.3)")
        major, minor, patch, pre, build = match.groups()
        return cls(
            int(major), int(minor), int(patch), tuple(pre.split(".")) if pre else (), build or ""
        )

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        # A version without prerelease sorts after any prerelease of the same triple.
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + self.build
        return text


@dataclass(frozen=True)
class VersionRange:
    """A conjunction of version constraints such as ``>=1.0.0,<2.0.0``."""

    constraints: tuple[tuple[str, Version], ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        """Parse a range; ``"*"`` or an empty string matches everything.

        Raises:
            ValidationError: a constraint is malformed.
        """
        if not isinstance(text, str):
            raise ValidationError(f"version range must be a string, got {type(text).__name__}")
        if text.strip() in ("", "*"):
            return cls(())
        parsed: list[tuple[str, Version]] = []
        for part in text.split(","):
            match = _CONSTRAINT.match(part)
            if match is None:
                raise ValidationError(
                    f"bad version constraint {part.strip()!r} in {text!r} (expected e.g. >=1.0.0)"
                )
            parsed.append((match.group(1), Version.parse(match.group(2))))
        return cls(tuple(parsed))

    def contains(self, version: Version) -> bool:
        """Return whether ``version`` satisfies every constraint."""
        checks = {
            "==": lambda v, c: v == c,
            "!=": lambda v, c: v != c,
            ">=": lambda v, c: v >= c,
            "<=": lambda v, c: v <= c,
            ">": lambda v, c: v > c,
            "<": lambda v, c: v < c,
        }
        return all(checks[op](version, bound) for op, bound in self.constraints)

    def __str__(self) -> str:
        if not self.constraints:
            return "*"
        return ",".join(f"{op}{bound}" for op, bound in self.constraints)
