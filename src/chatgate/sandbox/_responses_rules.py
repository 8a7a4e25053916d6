"""Request validation for the Responses emulator (``POST /v1/responses``).

The model table and its reasoning rules are the Chat Completions emulator's (``_rules``); only
OpenAI models (gpt-5.x, gpt-4o*, gpt-4.1*) are served here. Error wording follows what the real
API answers on ``/v1/responses`` (``Unknown parameter: 'x'.``, ``Missing required parameter:
'tools[0].name'.``, ``No tool output found for function call call_x.``, ...); each error is raised
as :class:`~._rules.ApiError` and rendered in OpenAI's envelope by the HTTP layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ._jsonschema_gen import strict_problem
from ._reply import count_tokens
from ._rules import (
    EFFORT_REASONING_TOKENS,
    NAME_RE,
    ApiError,
    ModelSpec,
    bad,
    bad_name,
    check_range,
    invalid_type,
    invalid_value,
    lookup_model,
    missing,
    oxford,
)

_KNOWN = """
background context_management conversation include input instructions max_output_tokens
max_tool_calls metadata model parallel_tool_calls previous_response_id prompt prompt_cache_key
prompt_cache_retention reasoning safety_identifier service_tier store stream stream_options
temperature text tool_choice tools top_logprobs top_p truncation user
"""
KNOWN_PARAMS = frozenset(_KNOWN.split())  # CreateResponse properties the emulator knows
_TYPE_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("temperature top_p", "number", "a decimal"),
    ("max_output_tokens max_tool_calls top_logprobs", "int", "an integer"),
    ("background parallel_tool_calls store stream", "bool", "a boolean"),
    ("model instructions previous_response_id prompt_cache_key safety_identifier user "
     "service_tier truncation prompt_cache_retention", "str", "a string"),
    ("reasoning text stream_options prompt", "object", "an object"),
    ("metadata", "object", "a metadata object"),
    ("tools include context_management", "array", "an array"),
    ("input", "str|array", "one of a string or array of input items"),
    ("tool_choice", "str|object", "one of a string or object"),
    ("conversation", "str|object", "one of a string or object"),
)  # fmt: skip
_TYPES = {name: (kind, text) for names, kind, text in _TYPE_GROUPS for name in names.split()}

ROLES = ("assistant", "system", "developer", "user")
ITEM_TYPES = (
    "code_interpreter_call", "computer_call", "computer_call_output", "custom_tool_call",
    "custom_tool_call_output", "file_search_call", "function_call", "function_call_output",
    "image_generation_call", "item_reference", "local_shell_call", "local_shell_call_output",
    "mcp_approval_request", "mcp_approval_response", "mcp_call", "mcp_list_tools", "message",
    "reasoning", "web_search_call",
)  # fmt: skip
EMULATED_ITEMS = ("message", "function_call", "function_call_output", "reasoning",
                  "web_search_call")  # fmt: skip
PART_TYPES = ("input_text", "input_image", "output_text", "refusal", "input_file",
              "computer_screenshot", "summary_text")  # fmt: skip
INPUT_PARTS = ("input_text", "input_image", "input_file")
OUTPUT_PARTS = ("output_text", "refusal")
_PART_KEYS = {
    "input_text": {"type", "text"},
    "input_image": {"type", "image_url", "file_id", "detail"},
    "input_file": {"type", "file_id", "file_data", "file_url", "filename"},
    "output_text": {"type", "text", "annotations", "logprobs"},
    "refusal": {"type", "refusal"},
}
_ITEM_KEYS = {
    "message": {"type", "role", "content", "id", "status"},
    "function_call": {"type", "call_id", "name", "arguments", "id", "status"},
    "function_call_output": {"type", "call_id", "output", "id", "status"},
    "reasoning": {"type", "id", "summary", "encrypted_content", "content", "status"},
    "web_search_call": {"type", "id", "status", "action"},
}
TOOL_TYPES = (
    "function", "file_search", "computer_use_preview", "web_search", "web_search_2025_08_26",
    "web_search_preview", "web_search_preview_2025_03_11", "mcp", "code_interpreter",
    "image_generation", "local_shell", "shell", "custom", "apply_patch",
)  # fmt: skip
WEB_SEARCH_TYPES = ("web_search", "web_search_2025_08_26", "web_search_preview",
                    "web_search_preview_2025_03_11")  # fmt: skip
_FUNCTION_KEYS = {"type", "name", "description", "parameters", "strict"}
_WEB_SEARCH_KEYS = {"type", "search_context_size", "user_location", "filters",
                    "external_web_access"}  # fmt: skip
EFFORTS = tuple(EFFORT_REASONING_TOKENS)  # none minimal low medium high xhigh max
SUMMARIES = ("concise", "detailed", "auto")
INCLUDABLE = (
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url",
    "code_interpreter_call.outputs", "reasoning.encrypted_content",
    "message.output_text.logprobs",
)  # fmt: skip
SERVICE_TIERS = ("auto", "default", "flex", "priority")
IMAGE_DETAILS = ("auto", "low", "high")
JSON_WORD = (
    "Response input messages must contain the word 'json' in some form to use 'text.format' "
    "of type 'json_object'."
)
NO_INPUT = (
    "One of \"input\" or \"previous_response_id\" or 'prompt' or 'conversation' must be provided."
)


@dataclass
class ResponsesParams:
    """The validated, normalised request."""

    spec: ModelSpec
    model: str
    items: list[dict[str, Any]]  # input, a string turned into one user message
    instructions: str | None
    functions: list[dict[str, Any]]  # function tools as echoed (strict resolved)
    tools: list[dict[str, Any]]  # every tool as echoed in the response
    web_search: bool  # a web_search tool is present
    tool_choice: Any  # as echoed: "auto" | "none" | "required" | {...}
    parallel_tool_calls: bool
    text_format: dict[str, Any]
    verbosity: str
    effort: str | None  # effective effort (None: not a reasoning model)
    summary: str | None  # requested reasoning summary
    max_output_tokens: int | None
    temperature: float
    top_p: float
    store: bool
    stream: bool
    obfuscation: bool
    include: list[str]
    metadata: dict[str, str]
    user: str | None
    safety_identifier: str | None
    prompt_cache_key: str | None
    prompt_cache_retention: str | None
    service_tier: str
    truncation: str
    max_tool_calls: int | None
    top_logprobs: int
    input_tokens: int = 0
    call_names: dict[str, str] = field(default_factory=dict)  # call_id -> function name

    @property
    def reasoning_item(self) -> bool:
        """Whether the answer carries a ``reasoning`` output item."""
        return self.effort is not None and self.effort != "none"

    @property
    def reasoning_tokens(self) -> int:
        return EFFORT_REASONING_TOKENS[self.effort] if self.reasoning_item and self.effort else 0


def unknown(param: str) -> ApiError:
    return bad(f"Unknown parameter: '{param}'.", param, "unknown_parameter")


def _is(value: Any, kind: str) -> bool:
    if kind in ("number", "int"):
        types = (int, float) if kind == "number" else (int,)
        return isinstance(value, types) and not isinstance(value, bool)
    return isinstance(value, {"bool": bool, "str": str, "object": dict, "array": list}[kind])


def _check_keys(obj: dict[str, Any], allowed: set[str] | frozenset[str], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            raise unknown(f"{prefix}{key}")


def _str_field(obj: dict[str, Any], key: str, param: str, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise missing(param)
        return None
    if not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    return value


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def validate(body: Any) -> ResponsesParams:
    """Check a ``POST /v1/responses`` body the way the real API does; normalise it."""
    if not isinstance(body, dict):
        raise invalid_type("body", "an object", body)
    if body.get("model") is None:
        raise missing("model")
    if "input" not in body and not any(
        body.get(k) is not None for k in ("previous_response_id", "prompt", "conversation")
    ):
        raise missing("input")
    for key in body:
        if key not in KNOWN_PARAMS:
            raise unknown(key)
    for key, value in body.items():
        if value is None or key not in _TYPES:
            continue
        kind, text = _TYPES[key]
        if not any(_is(value, k) for k in kind.split("|")):
            raise invalid_type(key, text, value)

    raw_input = body.get("input")
    items = _check_input(raw_input)
    text_format, verbosity = _check_text(body.get("text"))
    functions, tools, web_search = _check_tools(body.get("tools"))
    tool_choice = _check_tool_choice(body.get("tool_choice"), functions, tools)
    effort_req, summary = _check_reasoning(body.get("reasoning"))
    include = _check_include(body.get("include"))
    _check_enum("truncation", body.get("truncation"), ("auto", "disabled"))
    _check_enum("service_tier", body.get("service_tier"), SERVICE_TIERS)
    _check_enum("prompt_cache_retention", body.get("prompt_cache_retention"), ("in_memory", "24h"))
    metadata = _check_metadata(body.get("metadata"))
    stream = bool(body.get("stream"))
    obfuscation = _check_stream_options(body.get("stream_options"), stream)
    for param, lo, hi in (("max_tool_calls", 1, None), ("top_logprobs", 0, 20),
                          ("temperature", 0, 2), ("top_p", 0, 1)):  # fmt: skip
        if body.get(param) is not None:
            check_range(param, body[param], lo, hi)

    model: str = body["model"]
    spec = lookup_model(model)
    if spec is None or spec.owned_by != "system":
        raise ApiError(
            400, f"The requested model '{model}' does not exist.", param="model",
            code="model_not_found",
        )  # fmt: skip
    _check_state(body)
    if not items and body.get("previous_response_id") is None:
        raise ApiError(400, NO_INPUT, code="missing_required_parameter")
    effort = _check_model_rules(body, spec, effort_req, summary, include)
    max_output = body.get("max_output_tokens")
    if max_output is not None:
        check_range("max_output_tokens", max_output, 16, spec.max_output)
    if text_format["type"] == "json_object":
        words = " ".join(_message_text(m) for m in items if "role" in m)
        if "json" not in words.lower():
            raise bad(JSON_WORD, "input")

    params = ResponsesParams(
        spec=spec,
        model=model,
        items=items,
        instructions=body.get("instructions"),
        functions=functions,
        tools=tools,
        web_search=web_search,
        tool_choice=tool_choice,
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        text_format=text_format,
        verbosity=verbosity,
        effort=effort,
        summary=summary,
        max_output_tokens=max_output,
        temperature=float(body["temperature"]) if body.get("temperature") is not None else 1.0,
        top_p=float(body["top_p"]) if body.get("top_p") is not None else 1.0,
        store=body.get("store") is not False,
        stream=stream,
        obfuscation=obfuscation,
        include=include,
        metadata=metadata,
        user=body.get("user"),
        safety_identifier=body.get("safety_identifier"),
        prompt_cache_key=body.get("prompt_cache_key"),
        prompt_cache_retention=body.get("prompt_cache_retention"),
        service_tier=body.get("service_tier") or "auto",
        truncation=body.get("truncation") or "disabled",
        max_tool_calls=body.get("max_tool_calls"),
        top_logprobs=body.get("top_logprobs") or 0,
        call_names={
            str(it["call_id"]): str(it["name"]) for it in items if it.get("type") == "function_call"
        },
    )
    params.input_tokens = count_input_tokens(params)
    if params.input_tokens > spec.context_window:
        raise bad(
            "Your input exceeds the context window of this model. Please adjust your input and "
            "try again.",
            "input",
            "context_length_exceeded",
        )
    return params


def _check_enum(param: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise invalid_value(param, value, allowed)


def _check_state(body: dict[str, Any]) -> None:
    """Server-side state: the sandbox stores nothing, so every reference is unknown."""
    prev = body.get("previous_response_id")
    if prev is not None:
        raise bad(
            f"Previous response with id '{prev}' not found.",
            "previous_response_id",
            "previous_response_not_found",
        )
    conv = body.get("conversation")
    if conv is not None:
        cid = conv.get("id") if isinstance(conv, dict) else conv
        raise ApiError(404, f"Conversation with id '{cid}' not found.")
    prompt = body.get("prompt")
    if prompt is not None:
        raise ApiError(404, f"Prompt with id '{prompt.get('id')}' not found.")
    if body.get("background"):
        raise bad(
            "Background responses are not emulated by the Chatgate sandbox.",
            "background",
            "unsupported_parameter",
        )


# --------------------------------------------------------------------------------------------
# input items
# --------------------------------------------------------------------------------------------


def _message_text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict)
        )
    return ""


def _check_input(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}] if raw else []
    items: list[dict[str, Any]] = []
    calls: dict[str, int] = {}  # unanswered function calls: call_id -> index
    answered: set[str] = set()
    for i, item in enumerate(raw):
        p = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid_type(p, "an input item", item)
        kind = item.get("type")
        if kind is None or (kind == "message" and "role" in item):
            if kind is None and "role" not in item:
                raise invalid_value(p, "", ROLES)
            _check_message(i, item)
        elif not isinstance(kind, str) or kind not in ITEM_TYPES:
            raise invalid_value(p, kind if isinstance(kind, str) else "", ITEM_TYPES)
        elif kind == "message":
            raise missing(f"{p}.role")
        elif kind == "item_reference":
            raise bad(f"Item with id '{item.get('id')}' not found.", "input")
        elif kind not in EMULATED_ITEMS:
            raise bad(
                f"Input items of type '{kind}' are not emulated by the Chatgate sandbox.",
                f"{p}.type",
                "unsupported_value",
            )
        else:
            _check_keys(item, _ITEM_KEYS[kind], f"{p}.")
            if kind == "function_call":
                call_id = _str_field(item, "call_id", f"{p}.call_id")
                _str_field(item, "name", f"{p}.name")
                _str_field(item, "arguments", f"{p}.arguments")
                calls.setdefault(str(call_id), i)
            elif kind == "function_call_output":
                call_id = str(_str_field(item, "call_id", f"{p}.call_id"))
                _check_output(i, item)
                if call_id not in calls:
                    raise bad(
                        f"No tool call found for function call output with call_id {call_id}.",
                        "input",
                    )
                answered.add(call_id)
            elif kind == "reasoning":
                summary = item.get("summary")
                if summary is None:
                    raise missing(f"{p}.summary")
                if not isinstance(summary, list):
                    raise invalid_type(f"{p}.summary", "an array", summary)
        items.append(item)
    for call_id in calls:
        if call_id not in answered:
            raise bad(f"No tool output found for function call {call_id}.", "input")
    return items


def _check_message(i: int, item: dict[str, Any]) -> None:
    p = f"input[{i}]"
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise invalid_value(p, role if isinstance(role, str) else "", ROLES)
    _check_keys(item, _ITEM_KEYS["message"], f"{p}.")
    if "content" not in item or item["content"] is None:
        raise missing(f"{p}.content")
    content = item["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid_type(f"{p}.content", "one of a string or array of input content", content)
    allowed = OUTPUT_PARTS if role == "assistant" else INPUT_PARTS
    for j, part in enumerate(content):
        _check_part(f"{p}.content[{j}]", part, allowed)


def _check_part(p: str, part: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(part, dict):
        raise invalid_type(p, "an object", part)
    kind = part.get("type")
    if kind is None:
        raise missing(f"{p}.type")
    if kind not in PART_TYPES:
        raise invalid_value(f"{p}.type", kind, PART_TYPES)
    if kind not in allowed:
        raise invalid_value(p, kind, allowed)
    _check_keys(part, _PART_KEYS[kind], f"{p}.")
    if kind in ("input_text", "output_text"):
        _str_field(part, "text", f"{p}.text")
    elif kind == "refusal":
        _str_field(part, "refusal", f"{p}.refusal")
    elif kind == "input_image":
        url = _str_field(part, "image_url", f"{p}.image_url", required=False)
        if url is None and _str_field(part, "file_id", f"{p}.file_id", required=False) is None:
            raise missing(f"{p}.image_url")
        detail = part.get("detail")
        if detail is not None and detail not in IMAGE_DETAILS:
            raise invalid_value(f"{p}.detail", detail, IMAGE_DETAILS)
    elif kind == "input_file":
        sources = ("file_id", "file_data", "file_url")
        if not any(_str_field(part, k, f"{p}.{k}", required=False) for k in sources):
            raise missing(f"{p}.file_id")


def _check_output(i: int, item: dict[str, Any]) -> None:
    p = f"input[{i}].output"
    output = item.get("output")
    if output is None:
        raise missing(p)
    if isinstance(output, str):
        return
    if not isinstance(output, list):
        raise invalid_type(p, "one of a string or array of output content", output)
    for j, part in enumerate(output):
        _check_part(f"{p}[{j}]", part, INPUT_PARTS)


def output_text(item: dict[str, Any]) -> str:
    """The text of a ``function_call_output`` item's output."""
    output = item.get("output")
    if isinstance(output, str):
        return output
    return " ".join(str(p.get("text") or "") for p in output or () if isinstance(p, dict))


# --------------------------------------------------------------------------------------------
# text, tools, tool_choice, reasoning, include, metadata, stream_options
# --------------------------------------------------------------------------------------------


def _check_text(text: Any) -> tuple[dict[str, Any], str]:
    text = text or {}
    _check_keys(text, {"format", "verbosity"}, "text.")
    verbosity = text.get("verbosity") or "medium"
    _check_enum("text.verbosity", verbosity, ("low", "medium", "high"))
    fmt = text.get("format")
    if fmt is None:
        return {"type": "text"}, verbosity
    if not isinstance(fmt, dict):
        raise invalid_type("text.format", "an object", fmt)
    kind = fmt.get("type")
    if kind is None:
        raise missing("text.format.type")
    if kind not in ("json_object", "text", "json_schema"):
        raise invalid_value("text.format.type", kind, ("json_object", "text", "json_schema"))
    if kind != "json_schema":
        _check_keys(fmt, {"type"}, "text.format.")
        return {"type": kind}, verbosity
    name = _str_field(fmt, "name", "text.format.name")
    _check_keys(fmt, {"type", "name", "schema", "strict", "description"}, "text.format.")
    if not NAME_RE.match(str(name)):
        raise bad_name("text.format.name")
    schema = fmt.get("schema")
    if schema is None:
        raise missing("text.format.schema")
    if not isinstance(schema, dict):
        raise invalid_type("text.format.schema", "an object", schema)
    strict = fmt.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid_type("text.format.strict", "a boolean", strict)
    if strict:
        problem = strict_problem(schema)
        if problem is not None:
            raise bad(
                f"Invalid schema for response_format '{name}': {problem}",
                "text.format.schema",
                "invalid_json_schema",
            )
    echo = {"type": "json_schema", "description": fmt.get("description"), "name": name,
            "schema": schema, "strict": bool(strict)}  # fmt: skip
    return echo, verbosity


def _check_tools(raw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    functions: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    web_search = False
    for i, tool in enumerate(raw or ()):
        p = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid_type(p, "an object", tool)
        kind = tool.get("type")
        if kind is None:
            raise missing(f"{p}.type")
        if kind not in TOOL_TYPES:
            raise invalid_value(f"{p}.type", kind, TOOL_TYPES)
        if kind == "function":
            fn = _check_function(i, tool)
            if any(f["name"] == fn["name"] for f in functions):
                raise bad(f"Duplicate function name '{fn['name']}' found in 'tools'.", f"{p}.name")
            functions.append(fn)
            tools.append(fn)
        elif kind in WEB_SEARCH_TYPES:
            _check_keys(tool, _WEB_SEARCH_KEYS, f"{p}.")
            size = tool.get("search_context_size") or "medium"
            _check_enum(f"{p}.search_context_size", size, ("low", "medium", "high"))
            web_search = True
            tools.append({**tool, "search_context_size": size,
                          "user_location": tool.get("user_location")})  # fmt: skip
        else:
            raise bad(
                f"Tools of type '{kind}' are not emulated by the Chatgate sandbox.",
                f"{p}.type",
                "unsupported_value",
            )
    return functions, tools, web_search


def _check_function(i: int, tool: dict[str, Any]) -> dict[str, Any]:
    p = f"tools[{i}]"
    name = _str_field(tool, "name", f"{p}.name")  # a nested chat-style "function" lands here
    _check_keys(tool, _FUNCTION_KEYS, f"{p}.")
    if not NAME_RE.match(str(name)):
        raise bad_name(f"{p}.name")
    desc = _str_field(tool, "description", f"{p}.description", required=False)
    params = tool.get("parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise invalid_type(f"{p}.parameters", "an object", params)
        if params.get("type") != "object":
            got = params.get("type")
            raise bad(
                f"Invalid schema for function '{name}': schema must be a JSON Schema of 'type: "
                f'"object"\', got \'type: "{got}"\'.',
                f"{p}.parameters",
                "invalid_function_parameters",
            )
    strict = tool.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid_type(f"{p}.strict", "a boolean", strict)
    problem = strict_problem(params) if params is not None else None
    if strict and problem is not None:
        raise bad(
            f"Invalid schema for function '{name}': {problem}",
            f"{p}.parameters",
            "invalid_function_parameters",
        )
    if strict is None:  # unset: strict when the schema allows it
        strict = problem is None
    return {"type": "function", "description": desc, "name": name, "parameters": params,
            "strict": strict}  # fmt: skip


def _not_found(name: str) -> ApiError:
    return bad(f"Tool choice '{name}' not found in 'tools' parameter.", "tool_choice")


def _check_tool_choice(
    choice: Any, functions: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> Any:
    if choice is None:
        return "auto"
    names = {f["name"] for f in functions}
    kinds = {t["type"] for t in tools}
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise invalid_value("tool_choice", choice, ("none", "auto", "required"))
        if choice == "required" and not tools:
            raise bad("Tool choice 'required' must be specified with 'tools' parameter.",
                      "tool_choice")  # fmt: skip
        return choice
    kind = choice.get("type")
    if kind is None:
        raise missing("tool_choice.type")
    if kind == "function":
        name = _str_field(choice, "name", "tool_choice.name")
        _check_keys(choice, {"type", "name"}, "tool_choice.")
        if name not in names:
            raise _not_found(str(name))
        return {"type": "function", "name": name}
    if kind in WEB_SEARCH_TYPES:
        _check_keys(choice, {"type"}, "tool_choice.")
        if kind not in kinds:
            raise _not_found(kind)
        return {"type": kind}
    if kind == "allowed_tools":
        _check_keys(choice, {"type", "mode", "tools"}, "tool_choice.")
        mode = choice.get("mode") or "auto"
        _check_enum("tool_choice.mode", mode, ("auto", "required"))
        allowed = choice.get("tools")
        if not isinstance(allowed, list):
            raise missing("tool_choice.tools")
        for k, ref in enumerate(allowed):
            if not isinstance(ref, dict):
                raise invalid_type(f"tool_choice.tools[{k}]", "an object", ref)
            ref_name = ref.get("name") if ref.get("type") == "function" else ref.get("type")
            if ref.get("type") == "function" and ref_name not in names:
                raise _not_found(str(ref_name))
            if ref.get("type") != "function" and ref_name not in kinds:
                raise _not_found(str(ref_name))
        return {"type": "allowed_tools", "mode": mode, "tools": allowed}
    supported = ("allowed_tools", "function", *WEB_SEARCH_TYPES)
    raise invalid_value("tool_choice.type", kind, supported)


def _check_reasoning(reasoning: Any) -> tuple[str | None, str | None]:
    reasoning = reasoning or {}
    _check_keys(reasoning, {"effort", "summary"}, "reasoning.")
    effort = reasoning.get("effort")
    if effort is not None and not isinstance(effort, str):
        expected = "one of " + ", ".join(f"'{e}'" for e in EFFORTS[:-1]) + f", or '{EFFORTS[-1]}'"
        raise invalid_type("reasoning.effort", expected, effort)
    _check_enum("reasoning.effort", effort, EFFORTS)
    summary = reasoning.get("summary")
    _check_enum("reasoning.summary", summary, SUMMARIES)
    return effort, summary


def _check_include(include: Any) -> list[str]:
    out: list[str] = []
    for k, value in enumerate(include or ()):
        if not isinstance(value, str):
            raise invalid_type(f"include[{k}]", "a string", value)
        _check_enum(f"include[{k}]", value, INCLUDABLE)
        out.append(value)
    return out


def _check_metadata(metadata: Any) -> dict[str, str]:
    metadata = metadata or {}
    if len(metadata) > 16:
        raise bad(
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(metadata)} properties instead.",
            "metadata",
            "object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise bad(
                f"Invalid 'metadata': key '{key[:20]}...' is too long. Keys can be at most 64 "
                "characters.",
                "metadata",
                "invalid_value",
            )
        if not isinstance(value, str):
            raise invalid_type(f"metadata.{key}", "a string", value)
        if len(value) > 512:
            raise bad(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length 512, but got a string with length {len(value)} instead.",
                f"metadata.{key}",
                "string_above_max_length",
            )
    return dict(metadata)


def _check_stream_options(opts: Any, stream: bool) -> bool:
    if opts is None:
        return True
    if not stream:
        raise bad(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    _check_keys(opts, {"include_obfuscation"}, "stream_options.")
    value = opts.get("include_obfuscation")
    if value is not None and not isinstance(value, bool):
        raise invalid_type("stream_options.include_obfuscation", "a boolean", value)
    return value is not False


# --------------------------------------------------------------------------------------------
# per-model rules (shared model table)
# --------------------------------------------------------------------------------------------


def _unsupported(param: str, code: str | None = "unsupported_parameter") -> ApiError:
    return bad(f"Unsupported parameter: '{param}' is not supported with this model.", param, code)


def _check_model_rules(
    body: dict[str, Any],
    spec: ModelSpec,
    effort: str | None,
    summary: str | None,
    include: list[str],
) -> str | None:
    """Reasoning efforts and sampling per model; returns the effective effort."""
    if not spec.efforts:
        for param, value in (("reasoning.effort", effort), ("reasoning.summary", summary)):
            if value is not None:
                raise _unsupported(param)
        return None
    if effort is not None and effort not in spec.efforts:
        raise bad(
            f"Unsupported value: 'reasoning.effort' does not support '{effort}' with this model. "
            f"Supported values are: {oxford(spec.efforts)}.",
            "reasoning.effort",
            "unsupported_value",
        )
    effort = effort or spec.default_effort
    if spec.reasoning and effort != "none":
        for param in ("temperature", "top_p"):
            value = body.get(param)
            if value is not None and value != 1:
                raise _unsupported(param, None)
        if body.get("top_logprobs") or "message.output_text.logprobs" in include:
            param = "top_logprobs" if body.get("top_logprobs") else "include"
            raise bad(
                "logprobs are not supported with reasoning models.", param, "unsupported_parameter"
            )
    return effort


# --------------------------------------------------------------------------------------------
# token accounting
# --------------------------------------------------------------------------------------------


def _item_tokens(item: dict[str, Any]) -> int:
    kind = item.get("type") or "message"
    if kind == "message":
        content = item.get("content")
        total = 4 + count_tokens(_message_text(item))
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "input_image":
                    total += 85 if part.get("detail") == "low" else 765
                elif part.get("type") == "input_file":
                    total += 1000
        return total
    if kind == "function_call":
        return 4 + count_tokens(str(item.get("name"))) + count_tokens(str(item.get("arguments")))
    if kind == "function_call_output":
        return 4 + count_tokens(output_text(item))
    if kind == "reasoning":
        return sum(count_tokens(str(s.get("text", ""))) for s in item.get("summary") or ())
    return 8


def count_input_tokens(params: ResponsesParams) -> int:
    """Input tokens: items, instructions and tool definitions, plus a small fixed primer."""
    total = 3 + sum(_item_tokens(it) for it in params.items)
    if params.instructions:
        total += 4 + count_tokens(params.instructions)
    for tool in params.tools:
        if tool["type"] == "function":
            total += 8 + count_tokens(tool["name"]) + count_tokens(tool.get("description") or "")
            total += count_tokens(json.dumps(tool.get("parameters") or {}))
        else:
            total += 20
    if params.text_format["type"] == "json_schema":
        total += 10 + count_tokens(json.dumps(params.text_format["schema"]))
    return total
