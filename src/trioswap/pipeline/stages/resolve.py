"""`resolve`: find the model a request names and map aliases to the model id.

The model comes from the JSON body (parsed even when the client forgot the content type), a
multipart form field, or `?model=`. `resolve_path` instead takes it from `/upstream/<model>/...`.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, unquote

from trioswap.config import Config
from trioswap.errors import BadRequest, ModelNotFound
from trioswap.pipeline.exchange import Exchange
from trioswap.pipeline.stage import StageContext

_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.IGNORECASE)
_MODEL_FIELD = re.compile(rb'name="model"', re.IGNORECASE)


def parse_json_body(exchange: Exchange) -> None:
    try:
        parsed = json.loads(exchange.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise BadRequest("the request body must be a JSON object")
    exchange.json = parsed


def multipart_model(body: bytes, content_type: bytes) -> str | None:
    match = _BOUNDARY.search(content_type)
    if match is None:
        return None
    for part in body.split(b"--" + match.group(1)):
        head, sep, value = part.partition(b"\r\n\r\n")
        if sep and _MODEL_FIELD.search(head):
            return value.removesuffix(b"\r\n").decode(errors="replace").strip()
    return None


def query_model(query: bytes) -> str | None:
    values = parse_qs(query.decode("latin-1")).get("model")
    return values[0] if values else None


class Resolve:
    def __init__(self, context: StageContext) -> None:
        self._config = context.config

    async def __call__(self, exchange: Exchange) -> bool:
        content_type = (exchange.header(b"content-type") or b"").lower()
        name: str | None = None
        if content_type.startswith(b"multipart/form-data"):
            name = multipart_model(exchange.body, content_type)
        elif exchange.body.strip():
            parse_json_body(exchange)
            assert exchange.json is not None
            value = exchange.json.get("model")
            if value is not None and not isinstance(value, str):
                raise BadRequest("'model' must be a string")
            name = value
        if not name and exchange.query:
            name = query_model(exchange.query)
        if not name:
            raise BadRequest("the request names no model: set 'model' in the body")
        exchange.model_name = name
        exchange.model_id = _resolve(self._config, name)
        exchange.upstream_path = exchange.path
        return False


class ResolvePath:
    """`/upstream/<model>/<rest>`: model ids may contain '/', so the longest prefix that names a
    model wins."""

    def __init__(self, context: StageContext) -> None:
        self._config = context.config

    async def __call__(self, exchange: Exchange) -> bool:
        rest = exchange.path.removeprefix("/upstream/")
        parts = rest.split("/")
        for cut in range(len(parts), 0, -1):
            name = unquote("/".join(parts[:cut]))
            model_id = self._config.resolve(name)
            if model_id is not None:
                exchange.model_name = name
                exchange.model_id = model_id
                exchange.upstream_path = "/" + "/".join(parts[cut:])
                return False
        raise ModelNotFound(unquote(parts[0]) if parts and parts[0] else "")


def _resolve(config: Config, name: str) -> str:
    model_id = config.resolve(name)
    if model_id is None:
        raise ModelNotFound(name)
    return model_id
