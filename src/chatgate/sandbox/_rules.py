"""Model table and request validation for the Chat Completions emulator.

Error messages follow the real API's wording (recorded fixtures and the OpenAI docs); each error
is raised as :class:`ApiError` and rendered by the HTTP layer in OpenAI's envelope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from ._jsonschema_gen import strict_problem


class ApiError(Exception):
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}`` + status."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        err = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": err}


# --------------------------------------------------------------------------------------------
# Model table
# --------------------------------------------------------------------------------------------

EFFORT_REASONING_TOKENS = {
    "none": 0,
    "minimal": 8,
    "low": 16,
    "medium": 64,
    "high": 192,
    "xhigh": 384,
    "max": 768,
}


@dataclass(frozen=True)
class ModelSpec:
    """What the emulator knows about one model id."""

    id: str
    owned_by: str
    created: int
    snapshot: str | None = None  # response `model` value; None -> the requested id
    max_output: int = 16384  # ceiling for max_tokens / max_completion_tokens
    context_window: int = 128000  # prompt tokens above this -> context_length_exceeded
    efforts: tuple[str, ...] = ()  # allowed reasoning_effort values; () -> parameter unsupported
    default_effort: str = "none"
    reasoning: bool = (
        False  # sampling fixed (temperature/top_p = 1, no logprobs) unless effort none
    )
    rejects_max_tokens: bool = False  # only max_completion_tokens is accepted
    unsupported: tuple[str, ...] = ()  # parameters rejected whenever non-null
    max_temperature: float = 2.0
    temperature_xor_top_p: bool = False
    max_n: int = 128
    system_fingerprint: str | None = None
    stream_logprobs_key: bool = True  # stream chunk choices carry "logprobs": null


_E4 = ("none", "low", "medium", "high")
_E5 = ("none", "low", "medium", "high", "xhigh")


def _gpt5(
    id: str, created: int, snapshot: str, efforts: tuple[str, ...], default: str
) -> ModelSpec:
    # Reasoning models: only max_completion_tokens, fixed sampling unless effort is none, no
    # penalties; recorded gpt-5 streams carry no "logprobs" key in chunk choices.
    return ModelSpec(
        id, "system", created, snapshot, max_output=128000, context_window=400000,
        efforts=efforts, default_effort=default, reasoning=True, rejects_max_tokens=True,
        unsupported=("presence_penalty", "frequency_penalty"), stream_logprobs_key=False,
    )  # fmt: skip


def _claude(id: str, created: int, max_output: int = 64000) -> ModelSpec:
    unsupported = ("logprobs", "top_logprobs", "logit_bias", "presence_penalty",
                   "frequency_penalty", "seed")  # fmt: skip
    return ModelSpec(
        id, "anthropic", created, max_output=max_output, context_window=200000, efforts=_E4,
        unsupported=unsupported, max_temperature=1.0, temperature_xor_top_p=True, max_n=1,
    )  # fmt: skip


def _gemini(id: str, created: int) -> ModelSpec:
    return ModelSpec(
        id, "google", created, max_output=65536, context_window=1048576,
        efforts=("none", "minimal", "low", "medium", "high"), unsupported=("logit_bias",),
    )  # fmt: skip


_SPECS: tuple[ModelSpec, ...] = (
    _gpt5("gpt-5.1", 1763078400, "gpt-5.1-2025-11-13", _E4, "none"),
    _gpt5("gpt-5.2", 1765411200, "gpt-5.2-2025-12-11", _E5, "none"),
    _gpt5("gpt-5.3", 1770249600, "gpt-5.3-2026-02-05", _E5, "none"),
    _gpt5("gpt-5.3-codex", 1770249600, "gpt-5.3-codex-2026-02-05", _E5[1:], "medium"),
    _gpt5("gpt-5.4", 1772668800, "gpt-5.4-2026-03-05", _E5, "none"),
    _gemini("gemini-3-pro-preview", 1763424000),
    _gemini("gemini-2.5-pro", 1750118400),
    _gemini("gemini-2.5-flash", 1750118400),
    _gemini("gemini-3-flash-preview", 1765843200),
    _gemini("gemini-3.1-pro-preview", 1771459200),
    _claude("claude-sonnet-4-5", 1759104000),
    _claude("claude-opus-4-6", 1770249600, max_output=128000),
    _claude("claude-haiku-4-5-20251001", 1759276800),
    _claude("claude-sonnet-4-6", 1771286400),
    _claude("claude-opus-4-7", 1776297600, max_output=128000),
)
MODELS: dict[str, ModelSpec] = {s.id: s for s in _SPECS}
_GPT41 = ModelSpec("gpt-4.1", "system", 1744316542)
# Families accepted by prefix: any id starting with the key (listed ids appear in /v1/models).
PREFIX_FAMILIES: dict[str, ModelSpec] = {
    "gpt-4o": ModelSpec("gpt-4o", "system", 1715367049, system_fingerprint="fp_07871e2ad8"),
    "gpt-4.1": replace(
        _GPT41, max_output=32768, context_window=1047576, system_fingerprint="fp_b3f1157249"
    ),
}
LISTED_PREFIX_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano")


def lookup_model(model: str) -> ModelSpec | None:
    if model in MODELS:
        return MODELS[model]
    for prefix, spec in PREFIX_FAMILIES.items():
        if model.startswith(prefix):
            return replace(spec, id=model)
    return None


def all_models() -> list[ModelSpec]:
    listed = [lookup_model(m) for m in LISTED_PREFIX_MODELS]
    return [*_SPECS, *(m for m in listed if m is not None)]


# --------------------------------------------------------------------------------------------
# Request validation
# --------------------------------------------------------------------------------------------

_KNOWN = """
audio frequency_penalty function_call functions logit_bias logprobs max_completion_tokens
max_tokens messages metadata modalities model moderation n parallel_tool_calls prediction
presence_penalty prompt_cache_key prompt_cache_options prompt_cache_retention reasoning_effort
response_format safety_identifier seed service_tier stop store stream stream_options temperature
tool_choice tools top_logprobs top_p user verbosity web_search_options
"""
KNOWN_PARAMS = frozenset(_KNOWN.split())  # CreateChatCompletionRequest properties
_TYPE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("temperature top_p frequency_penalty presence_penalty", ("number",)),
    ("n max_tokens max_completion_tokens top_logprobs seed", ("int",)),
    ("logprobs stream store parallel_tool_calls", ("bool",)),
    ("model user safety_identifier prompt_cache_key service_tier verbosity reasoning_effort",
     ("str",)),
    ("metadata logit_bias stream_options response_format prediction audio web_search_options",
     ("object",)),
    ("tools functions modalities messages", ("array",)),
    ("stop", ("str", "array")),
    ("tool_choice", ("str", "object")),
)  # fmt: skip
_TYPES = {name: kinds for names, kinds in _TYPE_GROUPS for name in names.split()}
_EXPECTED = {"number": "a decimal", "int": "an integer", "bool": "a boolean", "str": "a string",
             "object": "an object", "array": "an array"}  # fmt: skip
_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_USER_PARTS = ("text", "image_url", "input_audio", "file")
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # function / schema names (Responses too)
_SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")


def describe(value: Any) -> str:
    """How the real API names a JSON value's type in error messages."""
    if value is None:
        return "null"
    for kind, name in (("bool", "a boolean"), ("int", "an integer"), ("number", "a decimal"),
                       ("str", "a string"), ("array", "an array")):  # fmt: skip
        if _is(value, kind):
            return name
    return "an object"


def _is(value: Any, kind: str) -> bool:
    if kind in ("number", "int"):
        types = (int, float) if kind == "number" else (int,)
        return isinstance(value, types) and not isinstance(value, bool)
    py = {"bool": bool, "str": str, "object": dict, "array": list}[kind]
    return isinstance(value, py)


def oxford(values: tuple[str, ...] | list[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def fmt_num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def unsupported_param(param: str, extra: str = "") -> ApiError:
    msg = f"Unsupported parameter: '{param}' is not supported with this model.{extra}"
    return bad(msg, param, "unsupported_parameter")


def missing(param: str) -> ApiError:
    return bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def invalid_type(param: str, expected: str, value: Any) -> ApiError:
    msg = f"Invalid type for '{param}': expected {expected}, but got {describe(value)} instead."
    return bad(msg, param, "invalid_type")


def invalid_value(param: str, value: Any, supported: tuple[str, ...]) -> ApiError:
    msg = f"Invalid value: '{value}'. Supported values are: {oxford(supported)}."
    return bad(msg, param, "invalid_value")


def empty_array(param: str) -> ApiError:
    msg = (
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an "
        "empty array instead."
    )
    return bad(msg, param, "empty_array")


def too_long(param: str, length: int, limit: int) -> ApiError:
    msg = (
        f"Invalid '{param}': array too long. Expected an array with maximum length {limit}, but "
        f"got an array with length {length} instead."
    )
    return bad(msg, param, "array_above_max_length")


def bad_name(param: str) -> ApiError:
    msg = (
        f"Invalid '{param}': string does not match pattern. Expected a string that matches the "
        "pattern '^[a-zA-Z0-9_-]+$'."
    )
    return bad(msg, param, "invalid_value")


def check_range(param: str, value: Any, lo: float | None, hi: float | None) -> None:
    kind = "integer" if isinstance(value, int) else "decimal"
    if lo is not None and value < lo:
        msg = (
            f"Invalid '{param}': {kind} below minimum value. Expected a value >= {fmt_num(lo)}, "
            f"but got {fmt_num(value)} instead."
        )
        raise bad(msg, param, f"{kind}_below_min_value")
    if hi is not None and value > hi:
        msg = (
            f"Invalid '{param}': {kind} above maximum value. Expected a value <= {fmt_num(hi)}, "
            f"but got {fmt_num(value)} instead."
        )
        raise bad(msg, param, f"{kind}_above_max_value")


@dataclass
class ChatParams:
    """The validated, normalised request."""

    spec: ModelSpec
    model: str
    messages: list[dict[str, Any]]
    effort: str
    stream: bool
    include_usage: bool
    include_obfuscation: bool
    n: int
    stop: list[str]
    budget: int | None
    logprobs: bool
    top_logprobs: int
    response_format: dict[str, Any] | None
    tools: list[dict[str, Any]]
    tool_choice: Any
    parallel_tool_calls: bool
    service_tier: str
    prompt_tokens: int = 0  # filled in by _reply.check_context


def validate(body: Any) -> ChatParams:
    """Check a parsed request body like the real API; raise :class:`ApiError` on the first error."""
    if not isinstance(body, dict):
        raise bad(
            f"Invalid type for request body: expected an object, but got {describe(body)} instead.",
            None,
            "invalid_type",
        )
    for key in body:
        if key not in KNOWN_PARAMS:
            raise bad(f"Unrecognized request argument supplied: {key}", key, "unknown_parameter")
    if body.get("model") in (None, ""):
        raise bad("you must provide a model parameter")
    if body.get("messages") is None:
        raise missing("messages")
    for key, kinds in _TYPES.items():
        value = body.get(key)
        if value is not None and not any(_is(value, k) for k in kinds):
            expected = " or ".join(_EXPECTED[k] for k in kinds)
            if key == "messages":
                expected = "an array of objects"
            raise invalid_type(key, expected, value)

    model: str = body["model"]
    spec = lookup_model(model)
    if spec is None:
        msg = f"The model `{model}` does not exist or you do not have access to it."
        raise ApiError(404, msg, code="model_not_found")
    effort = _check_model_rules(body, spec)
    _check_ranges(body, spec)
    messages: list[Any] = body["messages"]
    _check_messages(messages)
    tools = _check_tools(body)
    response_format = _check_response_format(body, messages)

    stream = bool(body.get("stream"))
    opts = body.get("stream_options")
    if opts is not None and not stream:
        raise bad(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    opts = opts or {}
    for key in ("include_usage", "include_obfuscation"):
        if opts.get(key) is not None and not isinstance(opts[key], bool):
            raise invalid_type(f"stream_options.{key}", "a boolean", opts[key])

    stop = body.get("stop")
    stop_list = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stop_list) > 4:
        raise too_long("stop", len(stop_list), 4)
    for i, s in enumerate(stop_list):
        if not isinstance(s, str):
            raise invalid_type(f"stop[{i}]", "a string", s)

    tier = body.get("service_tier") or "auto"
    if tier not in _SERVICE_TIERS:
        raise invalid_value("service_tier", tier, _SERVICE_TIERS)

    budget = body.get("max_completion_tokens")
    if budget is None:
        budget = body.get("max_tokens")
    return ChatParams(
        spec=spec,
        model=model,
        messages=messages,
        effort=effort,
        stream=stream,
        include_usage=bool(opts.get("include_usage")),
        include_obfuscation=opts.get("include_obfuscation") is not False,
        n=body.get("n") or 1,
        stop=[s for s in stop_list if s],
        budget=budget,
        logprobs=bool(body.get("logprobs")),
        top_logprobs=body.get("top_logprobs") or 0,
        response_format=response_format,
        tools=tools,
        tool_choice=body.get("tool_choice"),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        service_tier="default" if tier == "auto" else tier,
    )


def _check_model_rules(body: dict[str, Any], spec: ModelSpec) -> str:
    """Per-model parameter support; returns the effective reasoning effort."""
    if spec.rejects_max_tokens and body.get("max_tokens") is not None:
        raise unsupported_param("max_tokens", " Use 'max_completion_tokens' instead.")
    effort = body.get("reasoning_effort")
    if effort is not None and not spec.efforts:
        raise unsupported_param("reasoning_effort")
    if effort is not None and effort not in spec.efforts:
        raise bad(
            f"Unsupported value: 'reasoning_effort' does not support '{effort}' with this model. "
            f"Supported values are: {oxford(spec.efforts)}.",
            "reasoning_effort",
            "unsupported_value",
        )
    effort = effort or spec.default_effort
    for param in spec.unsupported:
        if body.get(param) is not None:
            raise unsupported_param(param)
    if spec.reasoning and effort != "none":
        for param in ("temperature", "top_p"):
            value = body.get(param)
            if value is not None and value != 1:
                raise bad(
                    f"Unsupported value: '{param}' does not support {fmt_num(value)} with this "
                    "model. Only the default (1) value is supported.",
                    param,
                    "unsupported_value",
                )
        if body.get("logprobs"):
            raise unsupported_param("logprobs")
        if body.get("top_logprobs") is not None:
            raise unsupported_param("top_logprobs")
    temperature = body.get("temperature")
    if temperature is not None and temperature > spec.max_temperature:
        check_range("temperature", temperature, 0, spec.max_temperature)
    if spec.temperature_xor_top_p and temperature is not None and body.get("top_p") is not None:
        raise bad(
            "`temperature` and `top_p` cannot both be specified for this model. Please use only "
            "one."
        )
    n = body.get("n")
    if spec.max_n == 1 and n is not None and n > 1:  # wider limits: generic range check
        raise bad(
            f"Unsupported value: 'n' does not support {n} with this model. Only the default (1) "
            "value is supported.",
            "n",
            "unsupported_value",
        )
    for param in ("max_completion_tokens", "max_tokens"):
        if body.get(param) is not None:
            check_range(param, body[param], 1, spec.max_output)
    return str(effort)


def _check_ranges(body: dict[str, Any], spec: ModelSpec) -> None:
    limits = {"temperature": (0, 2), "top_p": (0, 1), "n": (1, 128), "top_logprobs": (0, 20),
              "frequency_penalty": (-2, 2), "presence_penalty": (-2, 2)}  # fmt: skip
    for param, (lo, hi) in limits.items():
        if body.get(param) is not None:
            check_range(param, body[param], lo, hi)
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise bad(
            "Invalid value for 'top_logprobs': 'top_logprobs' is only allowed when 'logprobs' is "
            "enabled.",
            "top_logprobs",
            "invalid_value",
        )
    for key, bias in (body.get("logit_bias") or {}).items():
        if not key.isdigit():
            msg = f"Invalid key in 'logit_bias': {key}. Only integer token IDs are supported."
            raise bad(msg, "logit_bias", "invalid_value")
        if not _is(bias, "number"):
            raise invalid_type(f"logit_bias.{key}", "a decimal", bias)
        check_range(f"logit_bias.{key}", bias, -100, 100)
    verbosity = body.get("verbosity")
    if verbosity is not None and verbosity not in ("low", "medium", "high"):
        raise invalid_value("verbosity", verbosity, ("low", "medium", "high"))


def _check_content(i: int, role: str, msg: dict[str, Any]) -> None:
    param = f"messages[{i}].content"
    content = msg["content"]
    if content is None:
        if role == "assistant" and (msg.get("tool_calls") or msg.get("function_call")):
            return
        raise bad("Invalid value for 'content': expected a string, got null.", param)
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid_type(param, "one of a string or array of objects", content)
    if not content and role != "assistant":
        raise empty_array(param)
    allowed = {"user": _USER_PARTS, "assistant": ("text", "refusal")}.get(role, ("text",))
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise invalid_type(p, "an object", part)
        if "type" not in part:
            raise missing(f"{p}.type")
        if part["type"] not in allowed:
            raise invalid_value(f"{p}.type", part["type"], allowed)
        if part["type"] in ("text", "refusal") and not isinstance(part.get(part["type"]), str):
            raise missing(f"{p}.{part['type']}")
        if part["type"] == "image_url" and not isinstance(
            (part.get("image_url") or {}).get("url"), str
        ):
            raise missing(f"{p}.image_url.url")


def _check_messages(messages: list[Any]) -> None:
    if not messages:
        raise empty_array("messages")
    pending: dict[str, int] | None = None  # unanswered tool_call ids -> assistant index
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise invalid_type(f"messages[{i}]", "an object", msg)
        role = msg.get("role")
        if role is None:
            raise missing(f"messages[{i}].role")
        if role not in _ROLES:
            raise invalid_value(f"messages[{i}].role", role, _ROLES)
        if "content" not in msg and not (role == "assistant" and msg.get("tool_calls")):
            raise missing(f"messages[{i}].content")
        if "content" in msg:
            _check_content(i, role, msg)
        if msg.get("name") is not None and not isinstance(msg["name"], str):
            raise invalid_type(f"messages[{i}].name", "a string", msg["name"])
        if role == "tool":
            if not isinstance(msg.get("tool_call_id"), str):
                raise missing(f"messages[{i}].tool_call_id")
            if pending is None:
                raise bad(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
            if msg["tool_call_id"] not in pending:
                raise bad(
                    f"Invalid parameter: 'tool_call_id' of '{msg['tool_call_id']}' not found in "
                    "'tool_calls' of previous message.",
                    f"messages.[{i}].tool_call_id",
                )
            del pending[msg["tool_call_id"]]
            continue
        if pending:
            _unanswered(pending)
        pending = None
        if role == "assistant" and msg.get("tool_calls") is not None:
            pending = _check_tool_calls(i, msg["tool_calls"])
    if pending:
        _unanswered(pending)


def _unanswered(pending: dict[str, int]) -> None:
    index = next(iter(pending.values()))
    raise bad(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to "
        "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(pending),
        f"messages.[{index}].role",
    )


def _check_tool_calls(i: int, calls: Any) -> dict[str, int]:
    if not isinstance(calls, list):
        raise invalid_type(f"messages[{i}].tool_calls", "an array", calls)
    for j, call in enumerate(calls):
        p = f"messages[{i}].tool_calls[{j}]"
        if not isinstance(call, dict):
            raise invalid_type(p, "an object", call)
        for key in ("id", "type", "function"):
            if key not in call:
                raise missing(f"{p}.{key}")
        fn = call["function"] if isinstance(call["function"], dict) else {}
        if call["type"] == "function" and not isinstance(fn.get("name"), str):
            raise missing(f"{p}.function.name")
        if call["type"] == "function" and not isinstance(fn.get("arguments"), str):
            raise invalid_type(f"{p}.function.arguments", "a string", fn.get("arguments"))
    return {str(call["id"]): i for call in calls}


def _check_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools: list[Any] = body.get("tools") or []
    if len(tools) > 128:
        raise too_long("tools", len(tools), 128)
    names: list[str] = []
    for i, tool in enumerate(tools):
        p = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid_type(p, "an object", tool)
        if tool.get("type") not in ("function", "custom"):
            raise invalid_value(f"{p}.type", tool.get("type"), ("function", "custom"))
        key = tool["type"]
        fn = tool.get(key)
        if not isinstance(fn, dict):
            raise missing(f"{p}.{key}")
        if not isinstance(fn.get("name"), str):
            raise missing(f"{p}.{key}.name")
        if not NAME_RE.match(fn["name"]):
            raise bad_name(f"{p}.{key}.name")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise invalid_type(f"{p}.function.parameters", "an object", params)
        if key == "function" and fn.get("strict") and params is not None:
            _check_strict(params, f"function '{fn['name']}'", f"{p}.function.parameters")
        names.append(fn["name"])
    choice = body.get("tool_choice")
    if not tools:
        for param in ("tool_choice", "parallel_tool_calls"):
            if body.get(param) is not None:
                raise bad(
                    f"Invalid value for '{param}': '{param}' is only allowed when 'tools' are "
                    "specified.",
                    param,
                )
    if isinstance(choice, str) and choice not in ("none", "auto", "required"):
        raise invalid_value("tool_choice", choice, ("none", "auto", "required"))
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function":
            name = (choice.get("function") or {}).get("name")
            if not isinstance(name, str):
                raise missing("tool_choice.function.name")
            if name not in names:
                raise bad(
                    f"Invalid value for 'tool_choice': function '{name}' not found in 'tools'.",
                    "tool_choice",
                    "invalid_value",
                )
        elif kind not in ("allowed_tools", "custom"):
            raise invalid_value("tool_choice.type", kind, ("function", "allowed_tools", "custom"))
    return [t for t in tools if t.get("type") == "function"]


def _check_strict(schema: Any, what: str, param: str) -> None:
    """Strict structured outputs: every object needs additionalProperties false + all required."""
    problem = strict_problem(schema)
    if problem is not None:
        code = (
            "invalid_function_parameters" if what.startswith("function") else "invalid_json_schema"
        )
        raise bad(f"Invalid schema for {what}: {problem}", param, code)


def _check_response_format(body: dict[str, Any], messages: list[Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind is None:
        raise missing("response_format.type")
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid_value("response_format.type", kind, ("json_object", "json_schema", "text"))
    if kind == "json_object":
        text = " ".join(str(m.get("content")) for m in messages if isinstance(m, dict)).lower()
        if "json" not in text:
            raise bad(
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'.",
                "messages",
            )
    if kind == "json_schema":
        js = fmt.get("json_schema")
        if not isinstance(js, dict):
            raise missing("response_format.json_schema")
        if not isinstance(js.get("name"), str):
            raise missing("response_format.json_schema.name")
        if not NAME_RE.match(js["name"]):
            raise bad_name("response_format.json_schema.name")
        schema = js.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise invalid_type("response_format.json_schema.schema", "an object", schema)
        if js.get("strict") and schema is not None:
            _check_strict(schema, f"response_format '{js['name']}'", "response_format")
    return fmt if kind != "text" else None
