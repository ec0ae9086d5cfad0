"""Validation shared by the RT modules: saved-format headers and typed specs (numpy-free)."""

from __future__ import annotations

from typing import Any, Collection, Mapping, Optional


def check_saved_format(data: Mapping[str, Any], *, fmt: str, version: int, what: str,
                       required: Collection[str]) -> None:
    """Checks the header and keys of a ``to_dict`` mapping before rebuilding from it.

    Raises:
        ValueError: Not that kind of object, an unsupported version, or missing keys.
    """
    if data.get("format") != fmt:
        raise ValueError(f"not a saved {what}: expected format {fmt!r}, got {data.get('format')!r}.")
    if data.get("version") != version:
        raise ValueError(
            f"unsupported {what} format version {data.get('version')!r}; this code reads version {version}."
        )
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"saved {what} lacks the keys {missing}.")


def check_typed_spec(spec: Any, *, what: str, valid_keys: Mapping[str, Collection[str]],
                     type_order: Optional[Collection[str]] = None) -> str:
    """Checks a ``{"type": ..., ...}`` spec: a mapping, a known type, no unknown keys.

    Args:
        spec: The spec to check.
        what: How messages name it, e.g. ``"know-how source"``.
        valid_keys: For each type, the keys it accepts besides ``type``.
        type_order: The types in the order messages list them (default: ``valid_keys``).

    Returns:
        The spec's type.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a {what} must be a mapping with a 'type' key, got {spec!r}.")
    kind = spec.get("type")
    if kind not in valid_keys:
        raise ValueError(
            f"unknown {what} type {kind!r}; valid types: {', '.join(type_order or valid_keys)}."
        )
    unknown = sorted(set(spec) - set(valid_keys[kind]) - {"type"})
    if unknown:
        raise ValueError(
            f"unknown keys {unknown} for {what} type {kind!r}; valid keys: "
            f"{', '.join(sorted(valid_keys[kind]))}."
        )
    return kind
