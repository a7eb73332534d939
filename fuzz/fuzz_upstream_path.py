"""Fuzz target: `/upstream/<model>/<rest>` paths (`upstream_target`) and the URL the rest goes
to (`upstream_url`).

Any raw path either names a model or raises BadRequest or ModelNotFound; one with a control
character, raw or percent-encoded, is always refused. A named model is in the config and the
path forwarded is the tail of the raw path, byte for byte, starting with '/'. A path built here
from a model name, percent-encoded as clients do, names that model (or a longer one). The URL
built for the forwarded path and any query is one h11 sends without complaint (a request line
HTTP/1.1 allows)."""

from __future__ import annotations

import re
import sys
from urllib.parse import unquote_to_bytes

import atheris

with atheris.instrument_imports():
    import h11

    from trioswap.config import loads
    from trioswap.errors import BadRequest, ModelNotFound
    from trioswap.pipeline.stages.resolve import UPSTREAM_PREFIX, upstream_target
    from trioswap.pipeline.upstream import upstream_url
    from trioswap.pipeline.wire import URL

# Ids and aliases with '/', spaces, non-ASCII and '%', and ids that are prefixes of others.
CONFIG = loads(
    """
models:
  m:
    cmd: server --port ${PORT}
    aliases: [mini, the/alias, "100%", "%2F", "ü/x"]
  org:
    cmd: server --port ${PORT}
  org/model:
    cmd: server --port ${PORT}
    proxy: http://127.0.0.1:${PORT}/base/
  my model:
    cmd: server --port ${PORT}
  café/Ünï 😀:
    cmd: server --port ${PORT}
  50%off:
    cmd: server --port ${PORT}
  a/b/c:
    cmd: server --port ${PORT}
    proxy: http://[::1]:${PORT}
  "a%2Fb":
    cmd: server --port ${PORT}
"""
)
NAMES = sorted([*CONFIG.models, *CONFIG.aliases])
CONTROL = re.compile(rb"[\x00-\x1f\x7f]|%(?:[01][0-9a-fA-F]|7[fF])")
# Bytes a client must escape in a path segment: the query and fragment marks, '%' itself, and
# space (which only HTTP/2 lets through raw).
MUST_ESCAPE = frozenset(b"?#% ")


def encode_name(fdp: atheris.FuzzedDataProvider, name: str) -> bytes:
    """`name` as a client may write it in a path: each byte raw where that is possible (UTF-8
    too, as HTTP/2 allows) or percent-encoded in either case; so '/' is raw or %2F."""
    out = bytearray()
    for byte in name.encode():
        escape = fdp.ConsumeIntInRange(0, 2)
        if escape == 0 and byte not in MUST_ESCAPE:
            out.append(byte)
        else:
            out += (b"%%%02X" if escape < 2 else b"%%%02x") % byte
    return bytes(out)


def check_url(proxy: str, path: bytes, query: bytes) -> None:
    url = upstream_url(proxy, path, query)
    base = URL.parse(proxy).target.rstrip(b"/")
    assert url.target.startswith(base + b"/"), (url.target, base)
    # What an HTTP/1.1 client (h11, as httpcore's was) builds from the URL to send it.
    h11.Request(method=b"POST", target=url.target, headers=[(b"host", url.host)])


def check(raw_path: bytes, query: bytes) -> tuple[str, str, bytes] | None:
    try:
        name, model_id, forwarded = upstream_target(CONFIG, raw_path)
    except BadRequest as exc:
        str(exc).encode()  # the error body and the log line can be written out
        return None
    except ModelNotFound as exc:
        str(exc).encode()
        assert not CONTROL.search(raw_path), raw_path
        return None
    assert not CONTROL.search(raw_path), raw_path
    assert model_id in CONFIG.models and CONFIG.resolve(name) == model_id, (name, model_id)
    assert forwarded.startswith(b"/") and not CONTROL.search(forwarded), forwarded
    if forwarded == b"/" and not raw_path.endswith(b"/"):
        named = raw_path[len(UPSTREAM_PREFIX) :]  # `/upstream/<model>` alone
    else:
        assert raw_path.endswith(forwarded), (raw_path, forwarded)
        named = raw_path[len(UPSTREAM_PREFIX) : len(raw_path) - len(forwarded)]
    assert unquote_to_bytes(named).decode(errors="replace") == name, (named, name)
    check_url(CONFIG.models[model_id].proxy, forwarded, query)
    return name, model_id, forwarded


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    query = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 32))
    if fdp.ConsumeBool():
        check(fdp.ConsumeBytes(fdp.remaining_bytes()), query)
        return
    name = NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]
    encoded = encode_name(fdp, name)
    rest = fdp.ConsumeBytes(fdp.remaining_bytes())
    raw_path = UPSTREAM_PREFIX + encoded + rest
    if rest and not rest.startswith(b"/"):
        check(raw_path, query)
        return
    found = check(raw_path, query)
    if CONTROL.search(rest):
        assert found is None
        return
    # The rest may extend the name to a longer model id ('org' + '/model/…').
    assert found is not None, raw_path
    found_name, _, forwarded = found
    assert found_name == name or found_name.startswith(name + "/"), (found_name, name)
    assert (rest or b"/").endswith(forwarded), (rest, forwarded)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
