"""The responder's Ollama mode (``--ollama``): a catalogue of models and Ollama's native listing
routes, so that discovery of a running Ollama can be tested against a real process.

Routes: ``GET /api/version``, ``GET /api/tags``, ``POST /api/show``, ``GET /api/ps`` and, in
OpenAI's shape, ``GET /v1/models`` listing the catalogue. The OpenAI generation routes answer only
for models in the catalogue (``require``), and a model they name counts as loaded from then on:
``/api/ps`` lists it with its served context, its ``num_ctx`` parameter or the default.

``/api/show``'s ``model_info`` carries the ``tokenizer.ggml.*`` keys. A catalogue entry with a
``gguf`` file takes all of them from that file's metadata (read on the first ``/api/show`` of
it, then kept; arrays only under the names the ``gguf`` package knows): its arrays (``tokens``,
``token_type``, ``merges``…) in full when the request says ``"verbose": true``, else null, as
Ollama elides them. Without a ``gguf`` there are only
``tokenizer.ggml.model`` and ``tokenizer.ggml.pre``: no arrays at all, in either mode, since
null would claim arrays that ``verbose`` cannot produce.

The OpenAI-compatible families served follow ``--ollama-version`` unless ``--apis`` is given
(``families``). Paths without a route, those of unserved families included unless
``--unserved-status`` is given, answer as Ollama's Go router does: ``404 page not found`` in plain
text (``NOT_FOUND``).

Every answer here is a decision on data in memory (a GGUF file's metadata is read once, in a
fraction of a second even for real models), so the handlers are plain functions from a request
body to a status and a JSON value; the server sends them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

from trioswap.responder.wire import JSON, RequestError, parse_json

DEFAULT_VERSION = "0.12.6"
DEFAULT_CTX = 4096
# How long Ollama keeps an idle model loaded by default; /api/ps reports it from each listing,
# since models here never unload.
KEEP_ALIVE_NS = 5 * 60 * 10**9
# The request paths whose `model` must name a catalogue model: generation and embeddings.
MODEL_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses"}
)
# Ollama writes `/api/show` parameters as `key value` lines, the key padded to this width.
PARAMETER_KEY_WIDTH = 30
STOP_TOKENS = ('"<|im_start|>"', '"<|im_end|>"')
TEMPLATE = "{{ if .System }}{{ .System }}\n{{ end }}{{ .Prompt }}"
_PARAMETER_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMBT])")
_SCALE = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
# The OpenAI-shaped errors of Ollama's compatibility layer carry these two as null.
_OPENAI_NULLS: JSON = {"param": None, "code": None}
# What Ollama answers for a path it has no route for: gin's default, as text/plain.
NOT_FOUND = b"404 page not found"
# The Ollama release that first served each family beyond chat: /v1/responses, /v1/messages.
FAMILY_SINCE = {"responses": (0, 13, 3), "anthropic": (0, 14, 0)}
_RELEASE = re.compile(r"(\d+)\.(\d+)\.(\d+)")
TOKENIZER_PREFIX = "tokenizer.ggml."
# `tokenizer.ggml.pre` for a catalogue model without a GGUF file, by family (else the family).
_PRE_TYPES = {"llama": "llama-bpe"}

Answer = tuple[int, object]
OllamaHandler = Callable[[bytes], Answer]


def parameter_count(size: str) -> int:
    """`3.2B` -> 3200000000: the count an Ollama parameter_size abbreviates."""
    match = _PARAMETER_SIZE.fullmatch(size)
    if match is None:
        raise ValueError(f"parameter_size {size!r} is not a number and K, M, B or T, e.g. '4.3B'")
    return round(float(match[1]) * _SCALE[match[2]])


def families(version: str) -> frozenset[str]:
    """The API families an Ollama of this version serves. A pre-release counts as its release
    (0.14.0-rc1 as 0.14.0); a version without X.Y.Z numbers, or 0.0.0 (what a build from source
    reports), as the newest: such a build has every family."""
    match = _RELEASE.match(version)
    release = tuple(int(n) for n in match.groups()) if match else (0, 0, 0)
    newest = release == (0, 0, 0)
    served = (family for family, since in FAMILY_SINCE.items() if newest or release >= since)
    return frozenset({"chat", *served})


@cache
def gguf_tokenizer(path: str) -> JSON:
    """The `tokenizer.ggml.*` keys of a GGUF file's metadata, arrays in full."""
    # Imported here: gguf and tokenizers take long to import, and the responder starts fast.
    from gguf import Keys

    from trioswap.optimizer.gguf_vocab import read_metadata

    # read_metadata skips arrays it is not asked for: ask for every tokenizer key gguf knows.
    names = frozenset(
        name
        for name in vars(Keys.Tokenizer).values()
        if isinstance(name, str) and name.startswith(TOKENIZER_PREFIX)
    )
    meta = read_metadata(path, names)
    return {key: value for key, value in meta.items() if key.startswith(TOKENIZER_PREFIX)}


def rfc3339(ns: int) -> str:
    """Local time with nanoseconds and the UTC offset, as Ollama's timestamps are written."""
    seconds, fraction = divmod(ns, 10**9)
    stamp = datetime.fromtimestamp(seconds).astimezone().isoformat()
    return f"{stamp[:19]}.{fraction:09d}{stamp[19:]}"


def canonical(name: str) -> str:
    """A name without a tag means its `latest` tag, as Ollama reads model names."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass(frozen=True)
class OllamaModel:
    name: str
    family: str = "llama"
    parameter_size: str = "1.2B"
    quantization_level: str = "Q4_K_M"
    size: int = 750_000_000  # bytes
    num_ctx: int | None = None  # the context it is served with; None: --ollama-default-ctx
    context_length: int = 131072  # the context it was trained for
    capabilities: tuple[str, ...] = ("completion", "tools")
    gguf: str | None = None  # a GGUF file whose tokenizer metadata /api/show reports

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    def details(self) -> JSON:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    def parameters(self) -> list[tuple[str, str]]:
        pairs = [("num_ctx", str(self.num_ctx))] if self.num_ctx is not None else []
        return [*pairs, *(("stop", token) for token in STOP_TOKENS)]

    def tokenizer(self, verbose: bool) -> JSON:
        if self.gguf is None:
            return {
                "tokenizer.ggml.model": "gpt2",
                "tokenizer.ggml.pre": _PRE_TYPES.get(self.family, self.family),
            }
        meta = gguf_tokenizer(self.gguf)
        if verbose:
            return meta
        # Ollama reads no array's items unless asked to be verbose: they come out null.
        return {key: None if isinstance(value, list) else value for key, value in meta.items()}


DEFAULT_MODELS = (
    OllamaModel(
        "llama3.2:3b", "llama", "3.2B", size=2019393189, num_ctx=8192, context_length=131072
    ),
    OllamaModel(
        "qwen2.5-coder:7b",
        "qwen2",
        "7.6B",
        size=4683087332,
        context_length=32768,
        capabilities=("completion", "tools", "insert"),
    ),
)
# What a catalogue file's entries may set, and the JSON type of each.
_ENTRY_FIELDS: dict[str, type] = {
    "name": str,
    "family": str,
    "parameter_size": str,
    "quantization_level": str,
    "size": int,
    "num_ctx": int,
    "context_length": int,
    "capabilities": list,
    "gguf": str,
}


def model_from_entry(entry: object, where: str, folder: Path = Path()) -> OllamaModel:
    """A catalogue entry as a model; a relative `gguf` path is from `folder`, the catalogue's."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise ValueError(f"{where}: each model is an object with a non-empty string `name`")
    for key, value in entry.items():
        kind = _ENTRY_FIELDS.get(key)
        if kind is None:
            raise ValueError(f"{where}: unknown key {key!r}; known: {', '.join(_ENTRY_FIELDS)}")
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"{where}: {key} must be a JSON {kind.__name__}, not {value!r}")
    capabilities = entry.get("capabilities", OllamaModel.capabilities)
    if not all(isinstance(name, str) for name in capabilities):
        raise ValueError(f"{where}: capabilities must be a list of strings")
    try:
        count = parameter_count(entry.get("parameter_size", OllamaModel.parameter_size))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    # About what Q4_K_M weights take, unless the entry says.
    size = entry.get("size", count * 5 // 8)
    fields = {**entry, "size": size, "capabilities": tuple(capabilities)}
    if "gguf" in entry:
        gguf = folder / entry["gguf"]
        if not gguf.is_file():
            raise ValueError(f"{where}: gguf {str(gguf)!r} is not a file")
        fields["gguf"] = str(gguf)
    return OllamaModel(**fields)


def catalogue(spec: str) -> tuple[OllamaModel, ...]:
    """`--ollama-models`: `generate:N` or the path of a JSON list of models."""
    if spec.startswith("generate:"):
        count = spec.removeprefix("generate:")
        if not count.isdigit():
            raise argparse.ArgumentTypeError(f"{spec}: write generate:N, N a whole number")
        names = (f"model-{i:04d}:latest" for i in range(int(count)))
        return tuple(OllamaModel(name, size=10**9 + i) for i, name in enumerate(names))
    try:
        entries = json.loads(Path(spec).read_text())
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read the model list {spec}: {exc}") from None
    if not isinstance(entries, list):
        raise argparse.ArgumentTypeError(f"{spec}: the model list must be a JSON list of objects")
    try:
        folder = Path(spec).parent
        models = tuple(model_from_entry(e, f"{spec} [{i}]", folder) for i, e in enumerate(entries))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    names = [canonical(model.name) for model in models]
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{spec}: model names must be unique")
    return models


class OllamaApi:
    def __init__(
        self,
        models: tuple[OllamaModel, ...] = DEFAULT_MODELS,
        *,
        version: str = DEFAULT_VERSION,
        default_ctx: int = DEFAULT_CTX,
    ) -> None:
        self.models = {canonical(model.name): model for model in models}
        self.version = version
        self.default_ctx = default_ctx
        started = time.time_ns()
        # Older down the list, an hour apart, so that listings have distinct times to show.
        self.modified_ns = {
            name: started - index * 3600 * 10**9 for index, name in enumerate(self.models)
        }
        # Loaded models, least recently used first.
        self.loaded: dict[str, None] = {}
        self.routes: dict[str, dict[str, OllamaHandler]] = {
            "/api/version": {"GET": self.version_info},
            "/api/tags": {"GET": self.tags},
            "/api/show": {"POST": self.show},
            "/api/ps": {"GET": self.ps},
            "/v1/models": {"GET": self.openai_models},
        }

    def require(self, request: JSON) -> None:
        """Refuse a generation request for a model not in the catalogue, in the shape Ollama's
        OpenAI layer does; otherwise the model is loaded from now on."""
        name = request.get("model")
        if not isinstance(name, str) or not name:
            raise RequestError(400, "model is required", "invalid_request_error", _OPENAI_NULLS)
        key = canonical(name)
        if key not in self.models:
            message = f"model {json.dumps(name)} not found, try pulling it first"
            raise RequestError(404, message, "not_found_error", _OPENAI_NULLS)
        self.loaded.pop(key, None)
        self.loaded[key] = None

    def entry(self, name: str) -> JSON:
        model = self.models[name]
        return {
            "name": name,
            "model": name,
            "size": model.size,
            "digest": model.digest,
            "details": model.details(),
        }

    def version_info(self, body: bytes) -> Answer:
        return 200, {"version": self.version}

    def tags(self, body: bytes) -> Answer:
        models = [
            {**self.entry(name), "modified_at": rfc3339(self.modified_ns[name])}
            for name in self.models
        ]
        return 200, {"models": models}

    def show(self, body: bytes) -> Answer:
        try:
            request = parse_json(body)
        except RequestError as exc:
            return 400, {"error": str(exc)}
        name = request.get("model") or request.get("name")  # `name`: the API's older spelling
        if not isinstance(name, str) or not name:
            return 400, {"error": "model is required"}
        verbose = request.get("verbose", False)
        if not isinstance(verbose, bool):
            return 400, {"error": "verbose must be true or false"}
        model = self.models.get(canonical(name))
        if model is None:
            return 404, {"error": f"model '{name}' not found"}
        try:
            tokenizer = model.tokenizer(verbose)
        except (OSError, ValueError) as exc:
            return 500, {"error": f"{model.gguf}: {exc}"}
        lines = [f"{key:<{PARAMETER_KEY_WIDTH}} {value}" for key, value in model.parameters()]
        modelfile = "\n".join(
            [
                f"# Modelfile of {model.name}",
                f"FROM {model.name}",
                f'TEMPLATE """{TEMPLATE}"""',
                *(f"PARAMETER {key} {value}" for key, value in model.parameters()),
            ]
        )
        arch = model.family
        info = {
            "general.architecture": arch,
            "general.file_type": 15,
            "general.parameter_count": parameter_count(model.parameter_size),
            "general.quantization_version": 2,
            f"{arch}.context_length": model.context_length,
            **tokenizer,
        }
        return 200, {
            "modelfile": modelfile + "\n",
            "parameters": "\n".join(lines),
            "template": TEMPLATE,
            "details": model.details(),
            "model_info": dict(sorted(info.items())),  # Go writes a map's keys sorted
            "capabilities": list(model.capabilities),
            "modified_at": rfc3339(self.modified_ns[canonical(name)]),
        }

    def ps(self, body: bytes) -> Answer:
        expires_at = rfc3339(time.time_ns() + KEEP_ALIVE_NS)
        models = [
            {
                **self.entry(name),
                "expires_at": expires_at,
                "size_vram": self.models[name].size,
                "context_length": self.models[name].num_ctx or self.default_ctx,
            }
            for name in reversed(self.loaded)
        ]
        return 200, {"models": models}

    def openai_models(self, body: bytes) -> Answer:
        data = [
            {
                "id": name,
                "object": "model",
                "created": self.modified_ns[name] // 10**9,
                "owned_by": "library",
            }
            for name in self.models
        ]
        return 200, {"object": "list", "data": data}
