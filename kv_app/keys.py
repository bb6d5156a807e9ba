"""What a key is: a UUID written 8-4-4-4-12 in hex digits, either case; its canonical form
is lower-case. Used by the line checks, the stores, the API views and the client."""

from __future__ import annotations

import re

KEY_LEN = 36
DASH_COLUMNS = (8, 13, 18, 23)
DIGIT_COLUMNS = tuple(c for c in range(KEY_LEN) if c not in DASH_COLUMNS)
KEY_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# The same pattern anchored, as OpenAPI's `pattern` wants it (ECMA regex, not anchored).
ANCHORED_PATTERN = f"^{KEY_PATTERN}$"
EXAMPLE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
_KEY = re.compile(KEY_PATTERN)


def canonical_key(text: object) -> str | None:
    """The lower-case form of a UUID written 8-4-4-4-12 in hex digits, or None."""
    # fullmatch alone would accept a str subclass or a trailing "\n" never: the length
    # check is for speed, the isinstance for callers that pass anything.
    if isinstance(text, str) and len(text) == KEY_LEN and _KEY.fullmatch(text) is not None:
        return text.lower()
    return None


_LINES_OF_KEYS = re.compile(f"(?:{KEY_PATTERN}\n)*")


def canonical_keys(texts: list) -> list[str] | None:
    """The canonical form of each text if every one is a key, else None: one regex pass
    over them all (a batch of 1000 in a few tens of microseconds, not one call each)."""
    if not all(type(t) is str for t in texts):
        return None
    if not texts:
        return []
    joined = "\n".join(texts) + "\n"
    if _LINES_OF_KEYS.fullmatch(joined) is None:
        return None
    keys = joined.lower().split("\n")
    keys.pop()
    # A text holding a "\n" would have been split in two: then the counts differ.
    return keys if len(keys) == len(texts) else None


def key_bytes(key: str) -> bytes:
    """The 16 bytes of a canonical key (big-endian, as a UUID's own byte order)."""
    return bytes.fromhex(key.replace("-", ""))


def key_text(high: int, low: int) -> str:
    """The canonical key of a UUID given as its high and low 64-bit halves."""
    h = f"{(high << 64) | low:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def shortened(text: object, most: int = 60) -> object:
    """text cut to most characters (with "...") for a message; anything else as it is."""
    return text if not isinstance(text, str) or len(text) <= most else text[:most] + "..."


def malformed(text: object) -> str:
    """The one message for a key that is not a UUID."""
    return f"malformed id {shortened(text)!r}: expected a UUID such as {EXAMPLE}"
