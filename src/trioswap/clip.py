"""Text from outside (a client's model name or path, a model server's answer) made safe to write
into a log line or an error body: bounded, and with no control characters.

A model name can be megabytes long and a path can hold `%0d%0a`; echoed as they are, they grow
the log rings by megabytes per request and forge log lines. Whatever outside text reaches a log
line or an error message goes through `clip` first.
"""

from __future__ import annotations

import re

CLIP_CHARS = 200
# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and surrogates (a JSON
# string can hold one alone, and then the text cannot be written out as UTF-8).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return match[0].encode("unicode_escape").decode("ascii")


def clip(text: str | bytes, limit: int = CLIP_CHARS) -> str:
    """At most `limit` characters of `text` (bytes are read as UTF-8), control characters
    written as escapes (`\\n`, `\\x1b`), and how much was cut when something was."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    if not text.isprintable():
        text = _UNSAFE.sub(_escape, text)
    return f"{text}… ({cut} more characters)" if cut > 0 else text
