"""Where Ollama is: `OLLAMA_HOST` read as Ollama's own client reads it.

Accepted forms: `host`, `host:port`, `:port`, `[v6]:port`, and URLs (`http://host:port/path`,
`https://host`). Without a scheme the scheme is http and the port 11434; with `http://` or
`https://` and no port, the scheme's own port (80, 443), as Ollama does. A bind-all address
(`0.0.0.0`, `::`) — what a server is told to listen on — is reached on the loopback address.
"""

from __future__ import annotations

import ipaddress

DEFAULT_ENDPOINT = "http://127.0.0.1:11434"
_DEFAULT_PORT = {"http": 80, "https": 443}
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def ollama_endpoint(value: str) -> str:
    """The base URL (no trailing slash) that `value` (OLLAMA_HOST's forms) names; ValueError
    for a scheme other than http/https or a port that is not one."""
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest, default_port = "http", text, 11434
    else:
        scheme = scheme.lower()
        if scheme not in _DEFAULT_PORT:
            raise ValueError(f"OLLAMA_HOST: not an http(s) URL: {value!r}")
        default_port = _DEFAULT_PORT[scheme]
    hostport, _, path = rest.partition("/")
    host, port = _split(hostport, default_port, value)
    host = _LOOPBACK.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    base = f"{scheme}://{shown}:{port}"
    return f"{base}/{path.strip('/')}" if path.strip("/") else base


def _split(hostport: str, default_port: int, value: str) -> tuple[str, int]:
    if hostport.startswith("["):
        inside, _, after = hostport[1:].partition("]")
        host, port_text = inside, after.removeprefix(":")
    elif hostport.count(":") == 1:
        host, _, port_text = hostport.partition(":")
    else:
        # A bare IPv6 address, or a host without a port.
        host, port_text = hostport, ""
    host = host or "127.0.0.1"
    if host.count(":") > 1:
        ipaddress.IPv6Address(host)  # ValueError names the address
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"OLLAMA_HOST: not a port: {port_text!r} in {value!r}")
    return host, int(port_text)
