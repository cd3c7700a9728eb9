"""Compact JSON text, fast: the bytes of the standard library's encoder, from orjson.

Results are written as compact JSON (``json.dumps(value, ensure_ascii=False,
separators=(",", ":"))``) and their input is hashed in canonical form (the same, with
keys sorted).  orjson writes the same text several times faster, except for some
floats (orjson ``0.00001`` and ``1.5e-7``, Python ``1e-05`` and ``1.5e-07``), an integer
beyond 64 bits, a lone surrogate or a key that is not a string; :func:`compact` and
:func:`canonical` then fall back to the standard library (for a float, whenever the
text holds ``0.0000`` or ``e-``, even inside a string), so the text is always the
standard library's (tests/test_encoding.py compares them).  They take JSON data
(dict, list, tuple, str, int, finite float, bool, None); nbrules never puts a
non-finite float in a result (the patient validator rejects one).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["compact", "canonical", "canonical_utf8", "string", "float_safe", "Fragment"]

_plain = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_sorted = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode
_SORT_KEYS = orjson.OPT_SORT_KEYS
#: Where orjson's text of a float may differ from Python's, it holds one of these: a
#: plain decimal below 1e-4 (``0.00001``) or a negative exponent of one digit (``1.5e-7``,
#: Python ``1.5e-07``).  A plain substring test (fast); a string holding one falls back too.
_MAYBE_OTHER_FLOAT = (b"0.0000", b"e-")


def compact(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``, faster."""
    try:
        out = orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: a big integer, a lone surrogate, a key not a string
        return _plain(value)
    if _MAYBE_OTHER_FLOAT[0] in out or _MAYBE_OTHER_FLOAT[1] in out:  # maybe a float Python writes otherwise
        return _plain(value)
    return out.decode("utf-8")


def string(value: str | None) -> str:
    """``json.dumps(value, ensure_ascii=False)`` of one string (or None), faster: orjson writes any
    string as the standard library does (only a lone surrogate falls back), so the float
    test of :func:`compact` is not needed (it would send ``"durable-rules"`` to the slow path)."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        return _plain(value)


#: A pre-encoded JSON value for :func:`float_safe` data: orjson copies its bytes as they are.
Fragment = orjson.Fragment


def float_safe(value: Any) -> bytes | None:
    """orjson's text of ``value`` when it is the standard library's too, with every
    number in it written alike (no float of the forms :func:`compact` falls back for, no
    integer beyond 64 bits, no lone surrogate, string keys): data holding only these
    numbers, other strings and :data:`Fragment` values (themselves such text) can then be
    written by orjson in one call.  None otherwise."""
    try:
        out = orjson.dumps(value)
    except TypeError:
        return None
    if _MAYBE_OTHER_FLOAT[0] in out or _MAYBE_OTHER_FLOAT[1] in out:
        return None
    return out


def _orjson_sorted(value: Any) -> bytes | None:
    """orjson's sorted-keys text of ``value`` when it is the standard library's too, else None."""
    try:
        out = orjson.dumps(value, option=_SORT_KEYS)
    except TypeError:
        return None
    if _MAYBE_OTHER_FLOAT[0] in out or _MAYBE_OTHER_FLOAT[1] in out:
        return None
    return out


def canonical(value: Any) -> str:
    """``json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))``, faster."""
    out = _orjson_sorted(value)
    return _sorted(value) if out is None else out.decode("utf-8")


def canonical_utf8(value: Any) -> bytes:
    """``canonical(value).encode("utf-8")``, without the round trip through ``str``."""
    out = _orjson_sorted(value)
    return _sorted(value).encode("utf-8") if out is None else out
