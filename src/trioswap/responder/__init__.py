"""A small, fast, fake OpenAI-compatible LLM server (``python -m trioswap.responder``).

It stands in for llama-server and friends in tests, the demo config and the benchmarks.
It is a raw ASGI application served by hypercorn on trio, so that benchmarks measure
the proxy rather than the upstream. Knobs on the command line make it misbehave the way
real servers do: slow to bind, slow to load, slow to answer, crashing mid-stream,
failing to start, ignoring SIGTERM, leaving a grandchild behind; ``--apis`` chooses which
API families it speaks natively (chat completions, Anthropic Messages, Responses), the others
answering 404 or 405 as servers without them do. Markers in the user's message make a reply
reason and call tools in every family (``replies.KNOBS``, shown by ``--help``).

Modules: ``server`` (the ASGI application and command line), ``replies`` (the reply plan and
token counting every family shares), ``chat``, ``messages`` and ``responses`` (each family's
bodies and event streams), ``wire`` (JSON, SSE and request errors).
"""

from trioswap.responder.server import main

__all__ = ["main"]
