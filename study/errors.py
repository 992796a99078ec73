"""The one exception type that means "the user gave us something wrong", and its wording helpers.

The CLI turns a `StudyError` into a single line on stderr and exit code 2. Anything
else that escapes is a bug in this package, and shows as a traceback.
"""

from __future__ import annotations


class StudyError(Exception):
    """Bad input or a missing resource the user can fix.

    The message is one line that names the file or key, the value and what was expected.
    """


def where(source: str | None, key: str | None) -> str:
    """Format the "file: key:" prefix of an error message, skipping what is unknown."""
    parts = [p for p in (source, key) if p]
    return (": ".join(parts) + ": ") if parts else ""


def reason(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (or its type), for the end of a one-line error."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if len(line) > limit:  # cut at the last sentence end, else the last word, that fits
        cut = line[:limit]
        end = cut.rfind(". ")
        line = cut[: end + 1] if end > 0 else cut[: cut.rfind(" ")].rstrip(",;:") + " ..."
    return line or type(exc).__name__


def plural(n: int, word: str) -> str:
    """'1 trial', '2 trials': a count and its noun, for messages."""
    return f"{n} {word}{'s' * (n != 1)}"
