"""`resolve`: find the model a request names and map aliases to the model id, or find the peer
that serves it (see `pipeline.peers`; a local model or alias of the same name wins), or the
running Ollama that serves `ollama/<name>` (see `discovery.ollama`; local models and peers win).

The model comes from the body: a multipart form field, a urlencoded form field, or JSON (parsed
also when the client forgot the content type, and when `curl -d` labelled it a form); a body of
another type (raw audio) is not parsed. Failing that, from `?model=`. A form's model field is
renamed here as the model server or peer knows the model (`useModelName`, the peer's id): the
form streams on, and `filters` (which rewrite JSON) never see it. `resolve_path` instead takes
the model from `/upstream/<model>/…`, and forwards the rest of the path as the client sent it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from trioswap.config import Config
from trioswap.discovery.ollama import PREFIX, Discovered, Ollama
from trioswap.errors import BadRequest, ModelNotFound, UpstreamConnectError
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.form import LATE_MODEL, FormBody, multipart_model
from trioswap.pipeline.peers import PeerRoute, peer_routes
from trioswap.pipeline.stage import StageContext

UPSTREAM_PREFIX = b"/upstream/"
_MODEL_PARAM = re.compile(rb"(?:^|&)model=([^&]*)")
_FIRST_BYTE = re.compile(rb"\s*(.)", re.DOTALL)
# Raw, or percent-encoded: %00-%1F and %7F.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]|%(?:[01][0-9a-fA-F]|7[fF])")
_JSON_TYPES = frozenset({b"", b"application/json", b"text/plain"})


def media_type(content_type: bytes) -> bytes:
    return content_type.partition(b";")[0].strip().lower()


def parse_json_body(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the request body's JSON is nested too deeply") from None
    if not isinstance(parsed, dict):
        raise BadRequest("the request body must be a JSON object")
    return parsed


def param_model(params: bytes) -> str | None:
    """The `model` parameter of a query string or urlencoded form."""
    match = _MODEL_PARAM.search(params)
    if match is None:
        return None
    return unquote_to_bytes(match[1].replace(b"+", b" ")).decode(errors="replace")


def body_model(body: bytes, content_type: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """The model a whole request body names, and the body's JSON when it was parsed for that.
    (A form is read by `read_body` as far as its model field only; see `pipeline.form`.)"""
    media = media_type(content_type)
    if media == b"multipart/form-data":
        return multipart_model(body, content_type), None
    first = _FIRST_BYTE.match(body)
    if first is None:
        return None, None
    if first[1] != b"{":
        if media == b"application/x-www-form-urlencoded":
            return param_model(body), None
        if media not in _JSON_TYPES and not media.endswith(b"+json"):
            return None, None
    parsed = parse_json_body(body)
    value = parsed.get("model")
    if value is not None and not isinstance(value, str):
        raise BadRequest("'model' must be a string")
    return value, parsed


class Resolve:
    def __init__(self, context: StageContext) -> None:
        self._config = context.config
        self._peers = peer_routes(context.config)
        self._ollama = context.ollama
        # What a form's model field becomes, by model id (peers' routes carry their own).
        self._form_names = {
            m.id: m.use_model_name for m in context.config.models.values() if m.use_model_name
        }

    async def __call__(self, exchange: Exchange) -> bool:
        body = exchange.body
        form = None
        if body is None:
            form = exchange.request_body
            assert isinstance(form, FormBody), "resolve runs after read_body"
            name = form.model
        else:
            name, exchange.json = body_model(body, exchange.header(b"content-type") or b"")
        if not name and exchange.query:
            name = param_model(exchange.query)
        if not name:
            if form is not None and form.model_late:
                raise BadRequest(LATE_MODEL)
            raise BadRequest(
                "the request names no model: set 'model' in the body, or ?model= in the URL"
            )
        exchange.model_name = name
        if exchange.on_model is not None:
            exchange.on_model(name)
        exchange.model_id = self._config.resolve(name)
        if exchange.model_id is None:
            exchange.peer = self._peers.get(name)
            if exchange.peer is None:
                exchange.discovered = await discovered(self._ollama, name)
        exchange.upstream_path = exchange.path.encode()
        if form is not None:
            if exchange.peer is not None:
                upstream_name = exchange.peer.use_model_name
            elif exchange.discovered is not None:
                upstream_name = exchange.discovered.name
            else:
                upstream_name = self._form_names.get(exchange.model_id or "")
            if upstream_name is not None:
                form.rename(upstream_name)
        return False


async def discovered(ollama: Ollama | None, name: str) -> Discovered:
    """The Ollama model `name` names; ModelNotFound when there is none, and a clear 502 when
    Ollama itself does not answer."""
    if ollama is None or not name.startswith(PREFIX):
        raise ModelNotFound(name)
    found = await ollama.find(name)
    if found is not None:
        return found
    if ollama.up is False:
        raise UpstreamConnectError(name, f"Ollama at {ollama.endpoint} is not reachable")
    raise ModelNotFound(name, f"the config nor in the models of Ollama at {ollama.endpoint}")


class ResolvePath:
    """`/upstream/<model>/<rest>`: model ids may contain '/', so the longest prefix that names a
    model wins; it is matched percent-decoded, and `<rest>` goes on byte for byte."""

    def __init__(self, context: StageContext) -> None:
        self._config = context.config
        self._peers = peer_routes(context.config)

    async def __call__(self, exchange: Exchange) -> bool:
        name, model_id, rest = upstream_target(self._config, exchange.raw_path)
        exchange.model_name = name
        if exchange.on_model is not None:
            exchange.on_model(name)
        exchange.model_id = model_id
        if model_id is None:
            exchange.peer = _peer(self._peers, name)
        exchange.upstream_path = rest
        return False


def upstream_target(config: Config, raw_path: bytes) -> tuple[str, str | None, bytes]:
    """(model name, local model id or None for a peer's model, path to forward) of an
    `/upstream/…` path as the client sent it."""
    if _CONTROL.search(raw_path):
        raise BadRequest("the path contains a control character")
    if not raw_path.startswith(UPSTREAM_PREFIX):
        raise BadRequest("write the path's '/upstream/' prefix without percent-encoding")
    parts = raw_path[len(UPSTREAM_PREFIX) :].split(b"/")
    for cut in range(len(parts), 0, -1):
        name = unquote_to_bytes(b"/".join(parts[:cut])).decode(errors="replace")
        model_id = config.resolve(name)
        if model_id is not None or config.peer_target(name) is not None:
            return name, model_id, b"/" + b"/".join(parts[cut:])
    raise ModelNotFound(unquote_to_bytes(parts[0]).decode(errors="replace"))


def _peer(peers: Mapping[str, PeerRoute], name: str) -> PeerRoute:
    route = peers.get(name)
    if route is None:
        raise ModelNotFound(name)
    return route
