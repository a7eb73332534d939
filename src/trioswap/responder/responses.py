"""OpenAI Responses (/v1/responses): the response object and its event stream for a planned
reply. Output items come in the order reasoning, message, function calls."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from trioswap.responder.replies import (
    Meta,
    Reply,
    Turn,
    count_tokens,
    current_turn,
    plain_text,
    prompt_text,
)
from trioswap.responder.wire import JSON, Frame, named_sse


def by_assistant(item: JSON) -> bool:
    kind = item.get("type")
    return (
        item.get("role") == "assistant"
        or kind == "reasoning"
        or (isinstance(kind, str) and kind.endswith("_call"))
    )


def turn(request: JSON) -> Turn:
    items = request.get("input")
    if isinstance(items, str):
        return Turn(items)
    current = current_turn(items, by_assistant)
    users = [item for item in current if item.get("role") == "user"]
    return Turn(
        "\n".join(plain_text(item.get("content")) for item in users),
        [
            prompt_text(item.get("output"))
            for item in current
            if str(item.get("type")).endswith("_call_output")
        ],
    )


def prompt_tokens(request: JSON) -> int:
    return count_tokens(request.get("instructions"), request.get("input"))


def usage(reply: Reply) -> JSON:
    return {
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": reply.output_tokens,
        "output_tokens_details": {"reasoning_tokens": len(reply.reasoning)},
        "total_tokens": reply.prompt_tokens + reply.output_tokens,
    }


class Answer:
    """One response: its ids, fixed up front so that the stream and its final response agree."""

    def __init__(self, reply: Reply, meta: Meta, request: JSON) -> None:
        self.reply = reply
        self.meta = meta
        self.request = request
        self.id = meta.new_id("resp_")
        self.reasoning_id = meta.new_id("rs_")
        self.message_id = meta.new_id("msg_")
        self.calls = [(meta.new_id("fc_"), meta.new_id("call_"), call) for call in reply.tool_calls]
        self.status = "incomplete" if reply.truncated else "completed"

    def response(self, status: str, output: list[JSON], usage: JSON | None) -> JSON:
        request = self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.meta.created,
            "status": status,
            "error": None,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"),
            "model": self.meta.model,
            "output": output,
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": request.get("previous_response_id"),
            "tool_choice": request.get("tool_choice", "auto"),
            "tools": request.get("tools", []),
            "usage": usage,
            "metadata": request.get("metadata", {}),
            "responder": self.meta.info,
        }

    def reasoning_item(self, summary: list[JSON]) -> JSON:
        return {"id": self.reasoning_id, "type": "reasoning", "summary": summary}

    def message_item(self, status: str, content: list[JSON]) -> JSON:
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    @staticmethod
    def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> JSON:
        return {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "arguments": arguments,
            "call_id": call_id,
            "name": name,
        }

    def output(self) -> list[JSON]:
        reply = self.reply
        output = []
        if reply.reasoning:
            output.append(self.reasoning_item([summary_text("".join(reply.reasoning))]))
        if reply.text:
            output.append(self.message_item(self.status, [output_text("".join(reply.text))]))
        output.extend(
            self.call_item(item_id, call_id, call.name, call.arguments, "completed")
            for item_id, call_id, call in self.calls
        )
        return output

    def body(self) -> JSON:
        return self.response(self.status, self.output(), usage(self.reply))

    def events(self) -> Iterator[Frame]:
        """response.created and .in_progress; per output item output_item.added, its parts and
        deltas, output_item.done; response.completed (or .incomplete when cut short). Every
        event carries the next sequence_number."""
        numbers = itertools.count()

        def event(kind: str, piece: bool = False, /, **fields: object) -> Frame:
            data = {"type": kind, "sequence_number": next(numbers), **fields}
            return named_sse(kind, data), piece

        reply = self.reply
        pending = self.response("in_progress", [], None)
        yield event("response.created", response=pending)
        yield event("response.in_progress", response=pending)
        index = 0
        if reply.reasoning:
            text = "".join(reply.reasoning)
            at = {"item_id": self.reasoning_id, "output_index": index, "summary_index": 0}
            item = self.reasoning_item([])
            yield event("response.output_item.added", output_index=index, item=item)
            yield event("response.reasoning_summary_part.added", **at, part=summary_text(""))
            for piece in reply.reasoning:
                yield event("response.reasoning_summary_text.delta", True, **at, delta=piece)
            yield event("response.reasoning_summary_text.done", **at, text=text)
            yield event("response.reasoning_summary_part.done", **at, part=summary_text(text))
            item = self.reasoning_item([summary_text(text)])
            yield event("response.output_item.done", output_index=index, item=item)
            index += 1
        if reply.text:
            text = "".join(reply.text)
            at = {"item_id": self.message_id, "output_index": index, "content_index": 0}
            item = self.message_item("in_progress", [])
            yield event("response.output_item.added", output_index=index, item=item)
            yield event("response.content_part.added", **at, part=output_text(""))
            for piece in reply.text:
                yield event("response.output_text.delta", True, **at, delta=piece, logprobs=[])
            yield event("response.output_text.done", **at, text=text, logprobs=[])
            yield event("response.content_part.done", **at, part=output_text(text))
            item = self.message_item(self.status, [output_text(text)])
            yield event("response.output_item.done", output_index=index, item=item)
            index += 1
        for item_id, call_id, call in self.calls:
            at = {"item_id": item_id, "output_index": index}
            item = self.call_item(item_id, call_id, call.name, "", "in_progress")
            yield event("response.output_item.added", output_index=index, item=item)
            for piece in call.pieces:
                yield event("response.function_call_arguments.delta", True, **at, delta=piece)
            yield event(
                "response.function_call_arguments.done",
                **at,
                name=call.name,
                arguments=call.arguments,
            )
            item = self.call_item(item_id, call_id, call.name, call.arguments, "completed")
            yield event("response.output_item.done", output_index=index, item=item)
            index += 1
        yield event(f"response.{self.status}", response=self.body())


def summary_text(text: str) -> JSON:
    return {"type": "summary_text", "text": text}


def output_text(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": []}
