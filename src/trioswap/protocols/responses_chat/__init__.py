"""OpenAI Responses ⇄ chat completions, for model servers that speak only chat completions
(llama-server, vLLM) and clients that speak only Responses (Codex CLI).

Pure and framework-free: `request_to_chat` (request.py) translates the request,
`response_from_chat` (reply.py) a whole answer, `ResponseStream` (stream.py) a streamed one chunk
by chunk, `chat_error_to_responses` (errors.py) an error answer. What is translated, dropped or
refused, and why, is written at the top of each module. trioswap keeps no state: requests that
refer to stored responses are refused, and every response says `store: false`.
"""

from trioswap.protocols.responses_chat.errors import chat_error_to_responses
from trioswap.protocols.responses_chat.reply import response_from_chat
from trioswap.protocols.responses_chat.request import request_to_chat
from trioswap.protocols.responses_chat.stream import ResponseStream

__all__ = ["ResponseStream", "chat_error_to_responses", "request_to_chat", "response_from_chat"]
