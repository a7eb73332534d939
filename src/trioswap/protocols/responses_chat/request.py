"""A Responses request as a chat completions request.

Tools: function tools take chat's nested form; a custom tool becomes a function with one string
parameter `input` (its grammar, if any, in the description), whose calls go back as
`custom_tool_call` items. Hosted tools (web_search, file_search, code_interpreter,
image_generation, mcp) are dropped, as a model that chose not to use them would answer, and so is
a `namespace` of tools (Codex's sub-agent tools), as llama-server's own /v1/responses skips it;
any other tool type (local_shell, computer_use, ...) is refused.

Settings without a chat counterpart that local servers accept are dropped: `store` (nothing is
stored; the response says `store: false`), `include`, `metadata` (kept in the response object),
`prompt_cache_key`, `service_tier`, `safety_identifier`, `truncation`, `top_logprobs`,
`max_tool_calls` (it counts hosted tool calls), `text.verbosity`, `reasoning.summary`.
What needs state trioswap does not keep is refused: `previous_response_id`, `conversation`,
`prompt`, `background`, `item_reference`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trioswap.protocols.responses_chat.checks import (
    STATELESS,
    array,
    fail,
    kind_of,
    obj,
    show,
    string,
)
from trioswap.protocols.responses_chat.conversation import Conversation
from trioswap.protocols.responses_chat.output import Json

HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_2025_08_26",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "image_generation",
        "mcp",
        # Codex's `multi_agent_v1` tools come grouped; whether a call of one names the group is
        # not documented, so they are left out (Codex works without them).
        "namespace",
    }
)
# Chat servers (vLLM) take low, medium and high; "none" has no common counterpart: left out.
_EFFORT = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}


def request_to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses request body as a chat completions request body. `model` kept as is. When
    `stream` is true, sets stream and stream_options.include_usage. Raises BadRequest, saying
    what and where, for what cannot be translated. The chat request shares the body's values
    (tool schemas, texts) instead of copying them."""
    _refuse_state(body)
    tools = _tools(body.get("tools"))
    conversation = Conversation()
    instructions = body.get("instructions")
    if instructions is not None and string(instructions, "instructions"):
        conversation.system(instructions)
    conversation.add(body.get("input"))
    chat: Json = {"model": body["model"]} if "model" in body else {}
    chat["messages"] = conversation.messages()
    tools, choice = _tool_choice(body.get("tool_choice"), tools)
    if tools:
        chat["tools"] = tools
        if choice is not None:
            chat["tool_choice"] = choice
        parallel = body.get("parallel_tool_calls")
        if parallel is not None:
            if not isinstance(parallel, bool):
                fail("parallel_tool_calls", f"expected true or false, got {show(parallel)}")
            chat["parallel_tool_calls"] = parallel
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    _settings(body, chat)
    return chat


def _refuse_state(body: Mapping[str, Any]) -> None:
    previous = body.get("previous_response_id")
    if previous is not None:
        fail(
            "previous_response_id",
            f"{STATELESS}, so it cannot continue response {show(previous)}: send the whole "
            "conversation in input, and store: false",
        )
    if body.get("conversation") is not None:
        fail("conversation", f"{STATELESS}: send the conversation's items in input")
    if body.get("prompt") is not None:
        fail(
            "prompt",
            "a stored prompt template lives on OpenAI's servers: send its text as instructions",
        )
    if body.get("background") is True:
        fail("background", f"{STATELESS}, so there is nothing to poll: leave background out")


def _settings(body: Mapping[str, Any], chat: Json) -> None:
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None:
            if type(value) not in (int, float):
                fail(key, f"expected a number, got {show(value)}")
            chat[key] = value
    limit = body.get("max_output_tokens")
    if limit is not None:
        if type(limit) is not int:
            fail("max_output_tokens", f"expected an integer, got {show(limit)}")
        chat["max_tokens"] = limit
    user = body.get("user")
    if user is not None:
        chat["user"] = string(user, "user")
    reasoning = body.get("reasoning")
    if reasoning is not None:
        effort = obj(reasoning, "reasoning").get("effort")
        if isinstance(effort, str) and effort in _EFFORT:
            chat["reasoning_effort"] = _EFFORT[effort]
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        fail("stream", f"expected true or false, got {show(stream)}")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}


def _tools(value: object) -> list[Json]:
    if value is None:
        return []
    tools: list[Json] = []
    for i, tool in enumerate(array(value, "tools")):
        where = f"tools[{i}]"
        kind = kind_of(obj(tool, where), where)
        if kind == "function":
            tools.append(_function_tool(tool, where))
        elif kind == "custom":
            tools.append(_custom_tool(tool, where))
        elif kind not in HOSTED_TOOLS:
            fail(
                where,
                f"tool type {show(kind)} cannot be translated to chat completions: trioswap "
                "passes on function and custom tools, and leaves out the tools OpenAI's servers "
                "run (web_search, file_search, ...); offer it as a function tool",
            )
    return tools


def _function_tool(tool: Mapping[str, Any], where: str) -> Json:
    function: Json = {"name": string(tool.get("name"), f"{where}.name")}
    description = tool.get("description")
    if description is not None:
        function["description"] = string(description, f"{where}.description")
    parameters = tool.get("parameters")
    # Some servers need parameters; no parameters is an object with none.
    function["parameters"] = (
        {"type": "object", "properties": {}}
        if parameters is None
        else obj(parameters, f"{where}.parameters")
    )
    strict = tool.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            fail(f"{where}.strict", f"expected true or false, got {show(strict)}")
        function["strict"] = strict
    return {"type": "function", "function": function}


def _custom_tool(tool: Mapping[str, Any], where: str) -> Json:
    name = string(tool.get("name"), f"{where}.name")
    description = tool.get("description")
    text = "" if description is None else string(description, f"{where}.description")
    grammar = tool.get("format")
    if grammar is not None and obj(grammar, f"{where}.format").get("type") == "grammar":
        syntax = string(grammar.get("syntax"), f"{where}.format.syntax")
        definition = string(grammar.get("definition"), f"{where}.format.definition")
        text = f"{text}\n\nThe input follows this {syntax} grammar:\n{definition}".lstrip()
    parameters = {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The whole input, as text"}},
        "required": ["input"],
        "additionalProperties": False,
    }
    return {
        "type": "function",
        "function": {"name": name, "description": text, "parameters": parameters},
    }


def _tool_choice(value: object, tools: list[Json]) -> tuple[list[Json], object]:
    """The tools to send and the chat tool_choice (None: none sent)."""
    choice: object
    if value is None or value in ("auto", "none", "required"):
        choice = value
    else:
        kind = kind_of(obj(value, "tool_choice"), "tool_choice")
        if kind in ("function", "custom"):
            name = string(value.get("name"), "tool_choice.name")
            choice = {"type": "function", "function": {"name": name}}
        elif kind == "allowed_tools":
            choice = value.get("mode")
            if choice not in ("auto", "required"):
                fail("tool_choice.mode", f"expected 'auto' or 'required', got {show(choice)}")
            allowed = {
                tool.get("name")
                for tool in array(value.get("tools"), "tool_choice.tools")
                if isinstance(tool, Mapping) and isinstance(tool.get("name"), str)
            }
            tools = [tool for tool in tools if tool["function"]["name"] in allowed]
        else:
            fail(
                "tool_choice",
                f"type {show(kind)} cannot be translated to chat completions: trioswap can "
                "require function and custom tools only",
            )
    if tools:
        return tools, choice
    if choice == "required" or isinstance(choice, dict):
        fail("tool_choice", "requires a tool call, but no tool the request offers is passed on")
    return [], None


def _response_format(text: object) -> Json | None:
    if text is None:
        return None
    spec = obj(text, "text").get("format")
    if spec is None:
        return None
    kind = obj(spec, "text.format").get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        fail("text.format.type", f"expected text, json_object or json_schema, got {show(kind)}")
    schema: Json = {
        "name": string(spec.get("name"), "text.format.name"),
        "schema": obj(spec.get("schema"), "text.format.schema"),
    }
    description = spec.get("description")
    if description is not None:
        schema["description"] = string(description, "text.format.description")
    strict = spec.get("strict")
    if isinstance(strict, bool):
        schema["strict"] = strict
    return {"type": "json_schema", "json_schema": schema}
