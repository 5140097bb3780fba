"""Text from outside the farm (webhook bodies, job requests, Runware's error text) made safe
to store and to print.

PostgreSQL cannot hold NUL in text or JSON, so one NUL would fail the statement carrying
it. Control characters (ANSI escapes, carriage returns, newlines, bidirectional overrides)
printed to a terminal can move its cursor, recolour it or fake whole lines. Identifiers
and parameters with either are refused at the boundary, naming the field; free text the
farm must keep (Runware's error messages) is escaped instead, visibly and reversibly.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the
# bidirectional embeddings, overrides and isolates
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# what a prompt may hold besides printable text: it is written, not an identifier
_PROMPT_WHITESPACE = frozenset("\t\n\r")

REFUSED = "must not contain NUL or control characters"


def has_control(text: str) -> bool:
    """Whether `text` holds a character that must not be stored or printed raw."""
    return _CONTROL.search(text) is not None


def no_control(value: str) -> str:
    """`value` unchanged; ValueError (for a validator) if it holds a control character."""
    if has_control(value):
        raise ValueError(REFUSED)
    return value


def no_control_but_whitespace(value: str) -> str:
    """`value` unchanged; ValueError if it holds a control character other than a tab or
    a line break."""
    if any(c not in _PROMPT_WHITESPACE for c in _CONTROL.findall(value)):
        raise ValueError(REFUSED)
    return value


def escaped(text: str) -> str:
    """`text` with every control character written as its escape (ESC as \\x1b): one
    line, safe to store and to print."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode(), text)
