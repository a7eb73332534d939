"""Replies in the client's API family when the model's server speaks only chat completions.

Per model and family (`apis.anthropic`, `apis.responses`), a request goes `native` (as the client
sent it), `translate` (as a chat completions request, the reply translated back), or `auto`:
native, and translated from the moment the server answers that route with 404 or 405 — that
request and every later one for the model until its server restarts (`LearnedApis`).

The translators themselves are pure functions and stream objects in `trioswap.protocols`; this
module picks one, and remembers what `auto` learned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from trioswap.protocols import anthropic_chat, responses_chat

ANTHROPIC = "anthropic"
RESPONSES = "responses"
# The header that says a reply was translated, and how.
TRANSLATED_HEADER = b"x-trioswap-translated"
CHAT_PATH = b"/v1/chat/completions"
VERSIONLESS_CHAT_PATH = b"/chat/completions"


class StreamTranslator(Protocol):
    """One streamed reply: chat chunks in, the family's events out."""

    def feed(self, chunk: Mapping[str, Any]) -> bytes: ...
    def close(self) -> bytes: ...
    def error(self, kind: str, message: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Codec:
    """One family's translators."""

    family: str
    label: bytes
    request: Callable[[Mapping[str, Any]], dict[str, Any]]
    reply: Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]
    stream: Callable[[Mapping[str, Any]], StreamTranslator]
    # An upstream error answer (status, body) → the status and body the client gets.
    error: Callable[[int, bytes], tuple[int, dict[str, Any]]]


CODECS = {
    ANTHROPIC: Codec(
        ANTHROPIC,
        b"anthropic->chat",
        anthropic_chat.request_to_chat,
        anthropic_chat.message_from_chat,
        anthropic_chat.MessageStream,
        anthropic_chat.chat_error_to_anthropic,
    ),
    RESPONSES: Codec(
        RESPONSES,
        b"responses->chat",
        responses_chat.request_to_chat,
        responses_chat.response_from_chat,
        responses_chat.ResponseStream,
        responses_chat.chat_error_to_responses,
    ),
}
COUNT_PATHS = frozenset({"/v1/messages/count_tokens", "/v/messages/count_tokens"})
# The routes each family is translated on (llama-swap's versionless `/v/…` forms too).
FAMILY_OF_PATH = {
    "/v1/messages": ANTHROPIC,
    "/v1/messages/count_tokens": ANTHROPIC,
    "/v1/responses": RESPONSES,
    "/v/messages": ANTHROPIC,
    "/v/messages/count_tokens": ANTHROPIC,
    "/v/responses": RESPONSES,
}


@dataclass(slots=True)
class Translation:
    """A translated exchange: the codec, and the client's request as it sent it (the reply's
    shape depends on it: tools, stop sequences, metadata). `count`: a count_tokens request,
    which trioswap answers itself."""

    codec: Codec
    request: Mapping[str, Any]
    count: bool = False


@dataclass(slots=True)
class Fallback:
    family: str
    apply: Callable[[], None]


@dataclass
class LearnedApis:
    """What `auto` learned: per model, the server start (its generation) that answered a
    family's route with 404/405, and those families. A restart forgets."""

    _learned: dict[str, tuple[int, set[str]]] = field(default_factory=dict)

    def translated(self, model_id: str, generation: int, family: str) -> bool:
        found = self._learned.get(model_id)
        return found is not None and found[0] == generation and family in found[1]

    def learn(self, model_id: str, generation: int, family: str) -> None:
        found = self._learned.get(model_id)
        if found is None or found[0] != generation:
            found = self._learned[model_id] = (generation, set())
        found[1].add(family)

    def learned(self, model_id: str, generation: int) -> set[str]:
        found = self._learned.get(model_id)
        return set(found[1]) if found is not None and found[0] == generation else set()
