"""Inputs the fuzz targets in `fuzz/` found crashing, each asserting the contract it broke."""

from __future__ import annotations

import h11

from trioswap.pipeline.upstream import upstream_url


def test_a_query_with_control_characters_can_still_be_sent_upstream() -> None:
    # fuzz_upstream_path: HTTP/2 lets a query (and a path) carry bytes HTTP/1.1 does not allow
    # raw in a request target; h11 refused the URL, so the client got a 502.
    for path, query in [(b"/", b"\x00/\x00/v1/cha"), (b"/a b\t", b"q=\x01 \x7f")]:
        url = upstream_url("http://127.0.0.1:5800", path, query)
        h11.Request(method=b"POST", target=url.target, headers=[(b"host", url.host)])
