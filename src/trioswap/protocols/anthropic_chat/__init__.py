"""Anthropic Messages ⇄ OpenAI chat completions, for model servers that speak only chat.

Pure and framework-free: the proxy's stream stage translates the client's request with
`request_to_chat`, and the answer with `message_from_chat`, a `MessageStream` per streamed reply,
or `chat_error_to_anthropic`. Each module's docstring lists the decisions it makes where the two
APIs differ.
"""

from trioswap.protocols.anthropic_chat.errors import chat_error_to_anthropic
from trioswap.protocols.anthropic_chat.reply import message_from_chat
from trioswap.protocols.anthropic_chat.request import request_to_chat
from trioswap.protocols.anthropic_chat.stream import MessageStream

__all__ = ["MessageStream", "chat_error_to_anthropic", "message_from_chat", "request_to_chat"]
