"""Properties of the pure core: versions, ranges, canonical JSON, manifests, wire objects.

Each property is checked on generated inputs (hypothesis): semantic-version
ordering is a total order that agrees with an independent reading of
semver.org §11; ranges contain exactly the versions their constraints allow;
canonical JSON is a fixed point; manifests round-trip through JSON with
unknown fields kept and their signature intact; and every ``from_dict``
meets arbitrary JSON with a ``ValidationError`` or a faithful object, never
another exception and never a silent coercion.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import assume, given
from hypothesis import strategies as st

from fleetcast.core.canonical import canonical_json, parse_json_object
from fleetcast.core.manifest import Manifest, Payload, SignedManifest
from fleetcast.core.signing import Signature
from fleetcast.core.versions import Version, VersionRange
from fleetcast.core.wire import (
    AuthRequest,
    AuthResponse,
    DeltaOffer,
    Inventory,
    StatusReport,
    UpdateOffer,
)
from fleetcast.exceptions import SignatureError, ValidationError

_KEY = Ed25519PrivateKey.generate()

# --------------------------------------------------------------------------- strategies

numbers = st.integers(0, 10**12).map(str) | st.sampled_from(["0", "1", "2", "10", "11"])
alnum_ids = st.from_regex(r"\A[0-9]*[a-zA-Z-][0-9a-zA-Z-]{0,6}\Z")
numeric_ids = st.integers(0, 10**6).map(str)
prerelease = st.lists(numeric_ids | alnum_ids, min_size=0, max_size=4)
build = st.lists(st.from_regex(r"\A[0-9a-zA-Z-]{1,6}\Z"), min_size=0, max_size=3)


@st.composite
def semver_text(draw: st.DrawFn) -> str:
    text = ".".join(draw(numbers) for _ in range(3))
    pre = draw(prerelease)
    if pre:
        text += "-" + ".".join(pre)
    meta = draw(build)
    if meta:
        text += "+" + ".".join(meta)
    return text


versions = semver_text().map(Version.parse)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
json_no_floats = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,20}\Z")
hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
str_maps = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)


@st.composite
def payloads(draw: st.DrawFn, name: str) -> Payload:
    kind = draw(st.sampled_from(["rootfs-image", "files", "script", "module"]))
    meta = draw(str_maps)
    if kind == "module":
        meta["handler"] = draw(st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,10}\Z"))
    return Payload(
        name=name,
        type=kind,
        size=draw(st.integers(0, 2**40)),
        sha256=draw(hex64),
        compressed_size=draw(st.integers(0, 2**40)),
        compressed_sha256=draw(hex64),
        meta=meta,
    )


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    payload_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    items = [draw(payloads(n)) for n in payload_names]
    if any(p.type == "rootfs-image" for p in items):
        items = [next(p for p in items if p.type == "rootfs-image")]
    # "version" is a range the manifest validates; it gets its own strategy.
    depends = {k: v for k, v in draw(str_maps).items() if k != "version"}
    if draw(st.booleans()):
        depends["version"] = draw(ranges_text())
    unknown = draw(
        st.dictionaries(
            st.text(max_size=10).filter(lambda k: k not in Manifest._FIELDS),
            json_no_floats,
            max_size=3,
        )
    )
    return Manifest(
        name=draw(names),
        version=draw(semver_text()),
        compatible=tuple(draw(st.lists(names, min_size=1, max_size=3))),
        payloads=tuple(items),
        depends=depends,
        provides=draw(str_maps),
        description=draw(st.text(max_size=30)),
        unrecognized_fields=unknown,
    )


operators = st.sampled_from(["==", "!=", ">=", "<=", ">", "<"])


@st.composite
def ranges_text(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(operators, semver_text()), min_size=1, max_size=3))
    space = draw(st.sampled_from(["", " "]))
    return ",".join(f"{space}{op}{space}{v}{space}" for op, v in parts)


# --------------------------------------------------------------------------- versions


def _semver_cmp(a: str, b: str) -> int:
    """semver.org 2.0.0 §11, written independently of ``Version``: -1, 0 or 1."""

    def split(text: str) -> tuple[list[int], list[str] | None]:
        core, _, pre = text.split("+", 1)[0].partition("-")
        return [int(x) for x in core.split(".")], (pre.split(".") if pre else None)

    (core_a, pre_a), (core_b, pre_b) = split(a), split(b)
    if core_a != core_b:
        return -1 if core_a < core_b else 1
    if pre_a is None or pre_b is None:
        return (pre_a is None) - (pre_b is None)
    for x, y in zip(pre_a, pre_b, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(pre_a) > len(pre_b)) - (len(pre_a) < len(pre_b))


@given(a=semver_text(), b=semver_text())
def test_version_order_agrees_with_semver(a: str, b: str) -> None:
    va, vb = Version.parse(a), Version.parse(b)
    expected = _semver_cmp(a, b)
    assert (va < vb, va == vb, va > vb) == (expected < 0, expected == 0, expected > 0)
    assert (va == vb) == (hash(va) == hash(vb)) or va != vb


@given(a=versions, b=versions, c=versions)
def test_version_order_is_total_and_transitive(a: Version, b: Version, c: Version) -> None:
    assert sum([a < b, a == b, b < a]) == 1
    if a <= b and b <= c:
        assert a <= c
    assert sorted([a, b, c]) == sorted([c, b, a])


@given(text=semver_text())
def test_version_text_round_trips(text: str) -> None:
    version = Version.parse(text)
    assert str(version) == text
    assert Version.parse(str(version)) == version


@given(text=st.text(max_size=40))
def test_arbitrary_text_is_a_version_or_a_validation_error(text: str) -> None:
    try:
        version = Version.parse(text)
    except ValidationError:
        return
    # Accepted text is ASCII semver (surrounding whitespace aside) and means what it says.
    assert text.strip().isascii()
    assert str(version) == text.strip()


def test_unicode_digits_are_not_semver() -> None:
    """int() reads "1٣" as 13; a version must not (found by the property above)."""
    with pytest.raises(ValidationError):
        Version.parse("1\u0663.0.0")


@given(spec=ranges_text(), version=versions)
def test_a_range_contains_exactly_what_its_constraints_allow(spec: str, version: Version) -> None:
    parsed = VersionRange.parse(spec)
    expected = True
    for part in spec.split(","):
        part = part.strip()
        op = next(o for o in ("==", "!=", ">=", "<=", ">", "<") if part.startswith(o))
        cmp = _semver_cmp(str(version), part[len(op) :].strip())
        expected &= {
            "==": cmp == 0,
            "!=": cmp != 0,
            ">=": cmp >= 0,
            "<=": cmp <= 0,
            ">": cmp > 0,
            "<": cmp < 0,
        }[op]
    assert parsed.contains(version) is expected
    assert VersionRange.parse(str(parsed)) == parsed


@given(text=st.text(max_size=40))
def test_arbitrary_text_is_a_range_or_a_validation_error(text: str) -> None:
    with contextlib.suppress(ValidationError):
        VersionRange.parse(text)


# --------------------------------------------------------------------------- canonical JSON


@given(value=json_no_floats)
def test_canonical_json_is_a_fixed_point(value: Any) -> None:
    data = canonical_json(value)
    assert canonical_json(json.loads(data)) == data
    assert json.loads(data) == value


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


@given(value=json_values)
def test_canonical_json_refuses_exactly_the_values_with_floats(value: Any) -> None:
    try:
        canonical_json(value)
    except ValidationError:
        assert _has_float(value)
        return
    assert not _has_float(value)


@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_parse_json_object_raises_only_validation_errors(data: bytes) -> None:
    with contextlib.suppress(ValidationError):
        assert isinstance(parse_json_object(data, what="x"), dict)


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_deeply_nested_json_is_a_validation_error(depth: int) -> None:
    """A few kilobytes of brackets exhausted the parser's stack: RecursionError escaped
    (from a manifest.json inside an uploaded artifact, the server answered 500)."""
    with pytest.raises(ValidationError, match="nested too deeply"):
        parse_json_object(b'{"a":' + b"[" * depth + b"]" * depth + b"}", what="manifest.json")


# --------------------------------------------------------------------------- manifests


@given(manifest=manifests())
def test_manifests_round_trip_with_unknown_fields_kept(manifest: Manifest) -> None:
    data = json.loads(canonical_json(manifest.to_dict()))
    again = Manifest.from_dict(data)
    assert again == manifest
    assert again.canonical_bytes() == manifest.canonical_bytes()


@given(manifest=manifests(), field=st.text(max_size=8), value=json_no_floats)
def test_a_signed_manifest_survives_json_and_refuses_any_change(
    manifest: Manifest, field: str, value: Any
) -> None:
    signed = SignedManifest.create(manifest, _KEY)
    wire = json.loads(canonical_json(signed.to_dict()))
    again = SignedManifest.from_dict(wire)
    assert again.verify([_KEY.public_key()])
    assert again.manifest == manifest
    changed = json.loads(canonical_json(signed.to_dict()))
    assume(changed["signed"].get(field, object()) != value)
    changed["signed"][field] = value
    try:
        tampered = SignedManifest.from_dict(changed)
    except ValidationError:
        return
    with pytest.raises(SignatureError):
        tampered.verify([_KEY.public_key()])


@given(data=json_values)
def test_manifest_from_arbitrary_json_raises_only_validation_errors(data: Any) -> None:
    for parse in (Manifest.from_dict, SignedManifest.from_dict, Payload.from_dict):
        with contextlib.suppress(ValidationError):
            parse(data)


# --------------------------------------------------------------------------- wire objects


def _valid_examples() -> dict[type, dict[str, Any]]:
    manifest = Manifest(
        name="acme-fw",
        version="1.1.0",
        compatible=("acme-gw",),
        payloads=(
            Payload(
                name="rootfs",
                type="rootfs-image",
                size=10,
                sha256="a" * 64,
                compressed_size=20,
                compressed_sha256="b" * 64,
            ),
        ),
    )
    signed = SignedManifest.create(manifest, _KEY).to_dict()
    delta = {
        "url": "/api/device/v1/deltas/d/download",
        "size": 5,
        "sha256": "c" * 64,
        "engine": "zstd",
        "source_version": "1.0.0",
        "source_size": 10,
        "source_sha256": "d" * 64,
    }
    return {
        AuthRequest: {
            "identity": {"serial": "SN-1"},
            "device_type": "acme-gw",
            "public_key": "-----BEGIN PUBLIC KEY-----",
            "timestamp": 1795000000,
            "enrollment_token": "tok",
        },
        AuthResponse: {"device_id": "d", "token": "t", "expires_in": 3600},
        Inventory: {
            "device_type": "acme-gw",
            "artifact_name": "acme-fw",
            "artifact_version": "1.0.0",
            "attributes": {"kernel": "6.1"},
        },
        DeltaOffer: delta,
        UpdateOffer: {
            "deployment_id": "dep",
            "artifact_id": "art",
            "artifact_size": 30,
            "artifact_sha256": "e" * 64,
            "download_url": "/x",
            "manifest": signed,
            "allow_downgrade": False,
            "delta": delta,
        },
        StatusReport: {
            "status": "failure",
            "progress": 40,
            "message": "m",
            "log_tail": ["a", "b"],
            "rolled_back": True,
        },
    }


WIRE = _valid_examples()
#: Optional fields where JSON null means "not given" (the documented default).
NULL_MEANS_DEFAULT = {(UpdateOffer, "allow_downgrade"), (StatusReport, "rolled_back")}


@pytest.mark.parametrize("cls", list(WIRE), ids=lambda c: c.__name__)
def test_wire_objects_round_trip(cls: Any) -> None:
    obj = cls.from_dict(WIRE[cls])
    assert cls.from_dict(json.loads(json.dumps(obj.to_dict()))) == obj
    assert json.dumps(obj.to_dict(), sort_keys=True) == json.dumps(WIRE[cls], sort_keys=True)


@given(
    cls=st.sampled_from(list(WIRE)),
    field=st.text(max_size=12),
    value=json_values,
    drop=st.booleans(),
)
def test_wire_objects_meet_arbitrary_json_with_validation_errors_or_faithful_objects(
    cls: Any, field: str, value: Any, drop: bool
) -> None:
    """One field of a valid object replaced by (or dropped for) arbitrary JSON: either a
    ValidationError, or an object that says exactly what the JSON said, with no
    silent coercion ("false" read as True, 1 read as a boolean)."""
    data = json.loads(json.dumps(WIRE[cls]))
    keys = [*data, field]
    key = keys[hash(field) % len(keys)] if not drop else field
    if drop:
        key = list(data)[len(field) % len(data)]
        del data[key]
    else:
        data[key] = value
    try:
        obj = cls.from_dict(data)
    except ValidationError:
        return
    out = obj.to_dict()
    for name, given_value in data.items():
        if given_value is None and (cls, name) in NULL_MEANS_DEFAULT:
            continue
        if name in out:
            assert json.dumps(out[name], sort_keys=True) == json.dumps(
                given_value, sort_keys=True
            ), f"{cls.__name__}.{name}: {given_value!r} was read as {out[name]!r}"
    assert cls.from_dict(json.loads(json.dumps(out))) == obj


@given(data=json_values)
def test_wire_objects_from_arbitrary_json_raise_only_validation_errors(data: Any) -> None:
    for cls in (*WIRE, Signature):
        with contextlib.suppress(ValidationError):
            cls.from_dict(data)
