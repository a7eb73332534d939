"""API keys: when `apiKeys` are set, a request must carry one of them.

Accepted as `Authorization: Bearer <key>`, `x-api-key: <key>` (Anthropic clients) or HTTP Basic
auth with the key as the password (browsers). Keys are compared in constant time. Decided from the
headers alone, before any of the request body is read.
"""

from __future__ import annotations

import base64
import binascii
import hmac

Headers = list[tuple[bytes, bytes]]

CHALLENGE: Headers = [(b"www-authenticate", b'Basic realm="trioswap"')]


def presented_key(headers: Headers) -> bytes | None:
    for name, value in headers:
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            scheme = scheme.lower()
            if scheme == b"bearer":
                return credentials.strip()
            if scheme == b"basic":
                try:
                    decoded = base64.b64decode(credentials.strip(), validate=True)
                except (binascii.Error, ValueError):
                    return None
                return decoded.partition(b":")[2]
    return None


class ApiKeys:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(k.encode() for k in keys)

    def allows(self, headers: Headers) -> bool:
        if not self._keys:
            return True
        key = presented_key(headers)
        if key is None:
            return False
        # Compare against every key so timing does not reveal which one matched.
        matched = False
        for candidate in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched
