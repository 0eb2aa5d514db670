"""Untrusted text made safe to show (SPEC §10): every control and invisible formatting character made visible.

A submission's manifest, its crash messages and anything a record carries may hold a terminal escape, a
right-to-left override that reorders what a reader sees, or a zero-width character that hides a difference.
Shown anywhere (a terminal, a page, a chart), each such character reads as its code, e.g. `\\u202e`.
"""

from __future__ import annotations

import unicodedata

_KEPT = frozenset("\t\n")
"""Whitespace that every view already handles as whitespace."""


def _hidden(ch: str) -> bool:
    # Cc: C0 and C1 controls, DEL; Cf: formatting (bidirectional embeddings, overrides and isolates, zero-width
    # characters); Zl, Zp: line and paragraph separators; Co, Cn: private use and unassigned code points
    return ch not in _KEPT and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs")


def visible(value: object) -> str:
    """`value` as text in which every control or invisible formatting character is written as its code."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(_code(ch) if _hidden(ch) else ch for ch in text)


def _code(ch: str) -> str:
    point = ord(ch)
    return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"


def one_line(value: object) -> str:
    """Visible text on one line: runs of whitespace, newlines included, become one space."""
    return " ".join(visible(value).split())
