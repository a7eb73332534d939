"""The `GET /v1/models` listing, in OpenAI's shape with llama-swap's additions.

Every listed model (and, with `includeAliasesInList`, every alias, `setParamsByID` names
included) carries its name, description, `capabilities` rendered as llama-swap renders them
(`architecture`, `capabilities`, `supported_parameters`, `context_length`, `meta.n_ctx`), its
metadata under `meta.trioswap` with what the entry is (`type`: model, alias, peer or ollama)
and a `status`. Peer models are listed as `peer/model`, a running Ollama's as `ollama/<name>`
(read-only: Ollama manages them). Everything but the status and Ollama's models is computed
once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from trioswap.config import Capabilities, Config, ModelConfig
from trioswap.discovery.ollama import Discovered

OWNER = "trioswap"
# Fields the capabilities render at the top level; metadata keys of these names are dropped
# from `meta` when a model has capabilities, so a client sees one answer.
_RENDERED = frozenset({"architecture", "capabilities", "supported_parameters", "context_length"})


class ModelList:
    def __init__(self, config: Config, created: int) -> None:
        self._created = created
        # (entry without its status, the local model whose state it reports, if any)
        self._entries: list[tuple[dict[str, Any], str | None]] = []
        for model in config.models.values():
            if not model.unlisted:
                self._add_model(model, config.include_aliases_in_list)
        for peer in config.peers.values():
            for name in peer.models:
                internal = {"type": "peer", "peerID": peer.id}
                self._add(f"{peer.id}/{name}", f"{peer.id}: {name}", None, {}, None, internal)

    def data(self, loaded: Callable[[str], bool]) -> list[dict[str, Any]]:
        """The listing's entries, each with its status now."""
        return [
            {**entry, "status": {"value": "loaded" if model and loaded(model) else "unloaded"}}
            for entry, model in self._entries
        ]

    def _add_model(self, model: ModelConfig, with_aliases: bool) -> None:
        by_id = [n for n in model.filters.set_params_by_id if n != model.id]
        aliases = [*model.aliases, *(n for n in by_id if n not in model.aliases)]
        internal: dict[str, Any] = {"type": "model"}
        if aliases:
            internal["aliases"] = aliases
        listed = [(model.id, internal)]
        if with_aliases:
            listed += [(a, {"type": "alias", "modelID": model.id}) for a in aliases]
        for entry_id, extra in listed:
            self._add(
                entry_id,
                model.name,
                model.description,
                model.metadata,
                model.capabilities,
                extra,
                model.id,
            )

    def _add(
        self,
        entry_id: str,
        name: str | None,
        description: str | None,
        metadata: Mapping[str, Any],
        capabilities: Capabilities | None,
        internal: Mapping[str, Any],
        model: str | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "id": entry_id,
            "object": "model",
            "created": self._created,
            "owned_by": OWNER,
        }
        if name and name.strip():
            entry["name"] = name.strip()
        if description and description.strip():
            entry["description"] = description.strip()
        if capabilities is not None:
            entry.update(render_capabilities(capabilities))
            metadata = {k: v for k, v in metadata.items() if k not in _RENDERED}
        entry["meta"] = {OWNER: {**metadata, **internal}}
        if capabilities is not None and capabilities.context > 0:
            entry["meta"]["n_ctx"] = capabilities.context
        self._entries.append((entry, model))


def render_capabilities(caps: Capabilities) -> dict[str, Any]:
    """The top-level fields llama-swap derives from a model's `capabilities`."""
    out: dict[str, Any] = {}
    inputs, outputs = list(caps.inputs), list(caps.outputs)
    if inputs or outputs:
        architecture: dict[str, Any] = {}
        if inputs:
            architecture["input_modalities"] = inputs
        if outputs:
            architecture["output_modalities"] = outputs
        if inputs and outputs:
            architecture["modality"] = "+".join(inputs) + "->" + "+".join(outputs)
        out["architecture"] = architecture
    derived = {
        "vision": "image" in inputs,
        "audio_transcriptions": "audio" in inputs and "text" in outputs,
        "audio_speech": "text" in inputs and "audio" in outputs,
        "image_generation": "text" in inputs and "image" in outputs,
        "image_to_image": "image" in inputs and "image" in outputs,
        "function_calling": caps.tools,
        "reranker": caps.reranker,
    }
    flags = {flag: True for flag, on in derived.items() if on}
    if flags:
        out["capabilities"] = flags
    if caps.tools:
        out["supported_parameters"] = ["tools", "tool_choice"]
    if caps.context > 0:
        out["context_length"] = caps.context
    return out


def ollama_entry(model: Discovered, loaded: bool, context: int, source: str) -> dict[str, Any]:
    """A model a running Ollama serves: its `details` (family, parameter size, quantization)
    and the context it is served with, marked external and read-only."""
    details = model.details
    internal = {
        "type": "ollama",
        "external": True,
        "readOnly": True,
        "ollamaName": model.name,
        "digest": model.digest,
        "size": model.size,
        "modifiedAt": model.modified_at,
        "format": details.get("format"),
        "family": details.get("family"),
        "families": details.get("families"),
        "parameterSize": details.get("parameter_size"),
        "quantization": details.get("quantization_level"),
        "contextSource": source,
    }
    return {
        "id": model.id,
        "object": "model",
        "created": _created(model.modified_at),
        "owned_by": "ollama",
        "name": model.name,
        "context_length": context,
        "meta": {OWNER: internal, "n_ctx": context},
        "status": {"value": "loaded" if loaded else "unloaded"},
    }


def _created(rfc3339: str) -> int:
    """Unix seconds of Ollama's `modified_at` (RFC 3339 with nanoseconds), 0 if unreadable."""
    try:
        # Python reads at most microseconds: cut the fraction to six digits.
        head, dot, rest = rfc3339.partition(".")
        if dot:
            digits = len(rest) - len(rest.lstrip("0123456789"))
            rest = rest[: min(digits, 6)] + rest[digits:]
        return int(datetime.fromisoformat(head + dot + rest).timestamp())
    except ValueError:
        return 0
