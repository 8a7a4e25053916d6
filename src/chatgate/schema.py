"""The OpenAI Chat Completions wire shape, and the only module that knows it.

Request types are msgspec Structs: decoding *is* validation (types, ranges, unknown fields),
and re-encoding omits what the client did not send. Checks that span fields live in
:func:`check_request`. Responses and chunks stay plain dicts/bytes on the hot path: the
gateway only rewrites a few keys of them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

from .errors import InvalidRequest

Temperature = Annotated[float, Meta(ge=0, le=2)]
Probability = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
PositiveInt = Annotated[int, Meta(ge=1)]
TopLogprobs = Annotated[int, Meta(ge=0, le=20)]
ChoiceCount = Annotated[int, Meta(ge=1, le=128)]
LogitBias = Annotated[int, Meta(ge=-100, le=100)]
StopList = Annotated[list[str], Meta(min_length=1, max_length=4)]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class _S(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base: strict on input, compact on output."""


# --- content parts ---------------------------------------------------------------------


class _Part(_S, tag_field="type"):
    pass


class TextPart(_Part, tag="text"):
    text: str


class ImageURL(_S):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Part, tag="image_url"):
    image_url: ImageURL


class InputAudio(_S):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(_Part, tag="input_audio"):
    input_audio: InputAudio


class FileRef(_S):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FilePart(_Part, tag="file"):
    file: FileRef


class RefusalPart(_Part, tag="refusal"):
    refusal: str


UserPart = TextPart | ImagePart | AudioPart | FilePart
AssistantPart = TextPart | RefusalPart


# --- messages --------------------------------------------------------------------------


class FunctionCall(_S):
    name: str
    arguments: str


class ToolCall(_S, tag_field="type"):
    id: str
    function: FunctionCall


class FunctionToolCall(ToolCall, tag="function"):
    pass


class CustomCall(_S):
    name: str
    input: str


class CustomToolCall(_S, tag_field="type", tag="custom"):
    id: str
    custom: CustomCall


class ThinkingBlock(_S, tag_field="type", tag="thinking"):
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_S, tag_field="type", tag="redacted_thinking"):
    data: str


class _Msg(_S, tag_field="role"):
    pass


class SystemMessage(_Msg, tag="system"):
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(_Msg, tag="developer"):
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(_Msg, tag="user"):
    content: str | list[UserPart]
    name: str | None = None


class AssistantAudioRef(_S):
    id: str


class AssistantMessage(_Msg, tag="assistant"):
    content: str | list[AssistantPart] | None = None
    refusal: str | None = None
    name: str | None = None
    tool_calls: list[FunctionToolCall | CustomToolCall] | None = None
    function_call: FunctionCall | None = None
    audio: AssistantAudioRef | None = None
    # Response-only metadata that SDK users send back when they append the returned
    # message object to the history; OpenAI accepts it, so do we.
    annotations: list[dict[str, Any]] | None = None
    # Extensions the gateway returns for reasoning models, sent back on later turns so
    # that signed thinking can be replayed (Anthropic); plain OpenAI upstreams ignore them.
    reasoning_content: str | None = None
    thinking_blocks: list[ThinkingBlock | RedactedThinkingBlock] | None = None


class ToolMessage(_Msg, tag="tool"):
    content: str | list[TextPart]
    tool_call_id: str


class FunctionMessage(_Msg, tag="function"):
    name: str
    content: str | None


Message = (
    SystemMessage
    | DeveloperMessage
    | UserMessage
    | AssistantMessage
    | ToolMessage
    | FunctionMessage
)


# --- tools and formats -----------------------------------------------------------------

FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class FunctionDef(_S):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _Tool(_S, tag_field="type"):
    pass


class FunctionTool(_Tool, tag="function"):
    function: FunctionDef


class CustomTool(_Tool, tag="custom"):
    custom: dict[str, Any]


class NamedFunction(_S):
    name: str


class ToolChoiceFunction(_Tool, tag="function"):
    function: NamedFunction


class ToolChoiceCustom(_Tool, tag="custom"):
    custom: NamedFunction


class AllowedTools(_S):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class ToolChoiceAllowed(_Tool, tag="allowed_tools"):
    allowed_tools: AllowedTools


ToolChoice = (
    Literal["none", "auto", "required"] | ToolChoiceFunction | ToolChoiceCustom | ToolChoiceAllowed
)


class _Format(_S, tag_field="type"):
    pass


class TextFormat(_Format, tag="text"):
    pass


class JSONObjectFormat(_Format, tag="json_object"):
    pass


class JSONSchemaSpec(_S):
    name: Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class JSONSchemaFormat(_Format, tag="json_schema"):
    json_schema: JSONSchemaSpec


ResponseFormat = TextFormat | JSONObjectFormat | JSONSchemaFormat


class StreamOptions(_S):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


# --- the request -----------------------------------------------------------------------


class ChatRequest(_S):
    model: str
    messages: list[Message]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    stop: str | StopList | None = None
    n: ChoiceCount | None = None
    seed: int | None = None
    user: str | None = None
    tools: list[FunctionTool | CustomTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: TopLogprobs | None = None
    logit_bias: dict[str, LogitBias] | None = None
    reasoning_effort: ReasoningEffort | None = None
    metadata: Annotated[dict[str, str], Meta(max_length=16)] | None = None
    store: bool | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: Annotated[str, Meta(max_length=64)] | None = None
    functions: list[FunctionDef] | None = field(default=None)
    # gateway extensions (OpenRouter style): other models to try if this one cannot answer
    models: list[str] | None = None
    fallbacks: list[str] | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None


_decoder = msgspec.json.Decoder(ChatRequest)
encode = msgspec.json.encode

# "Expected `float` <= 2.0 - at `$.temperature`" -> ("Expected `float` <= 2.0", "temperature")
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")


def _param_from_path(path: str) -> str | None:
    # msgspec writes a dict key as "[...]": name the mapping itself
    path = path.lstrip(".").split("[...]", 1)[0]
    return path or None


def _join(path: str | None, name: str) -> str:
    return f"{path}.{name}" if path else name


def decode_request(body: bytes) -> ChatRequest:
    """Decode and validate a request body; raise InvalidRequest naming the bad param."""
    try:
        req = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _validation_error(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request. ({exc})",
            code="invalid_json",
        ) from None
    check_request(req)
    return req


def _validation_error(text: str) -> InvalidRequest:
    m = _AT.match(text)
    assert m is not None
    msg, path = m.group("msg"), _param_from_path(m.group("path") or "")
    if u := _UNKNOWN.search(msg):
        param = _join(path, u.group("name"))
        return InvalidRequest(
            f"Unrecognized request argument supplied: {param}",
            param=param,
            code="unknown_parameter",
        )
    if mi := _MISSING.search(msg):
        param = _join(path, mi.group("name"))
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if path is None and msg.startswith("Expected `object`"):
        return InvalidRequest(
            "The request body must be a JSON object.", param=None, code="invalid_type"
        )
    code = "invalid_type" if msg.startswith("Expected `") and " got " in msg else "invalid_value"
    if msg.startswith("Expected `array` of length"):
        code = "array_too_long" if "<=" in msg else "empty_array"
    return InvalidRequest(f"Invalid '{path}': {_lower_first(msg)}.", param=path, code=code)


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s else s


def check_request(req: ChatRequest) -> None:
    """Cross-field rules of the OpenAI API that a type cannot express."""
    if not req.model:
        raise InvalidRequest("Invalid 'model': empty string.", param="model")
    if not req.messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidRequest(
            "Invalid 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
            param="top_logprobs",
        )
    if req.max_tokens is not None and req.max_completion_tokens is not None:
        raise InvalidRequest(
            "Set either 'max_tokens' or 'max_completion_tokens', not both.",
            param="max_tokens",
        )
    if isinstance(req.stop, str) and not req.stop:
        raise InvalidRequest("Invalid 'stop': empty string.", param="stop")
    if req.logit_bias:
        for token in req.logit_bias:
            if not token.isdigit():
                raise InvalidRequest(
                    f"Invalid 'logit_bias': key '{token}' is not a token id.",
                    param="logit_bias",
                )
    names = _check_tools(req)
    _check_tool_choice(req, names)
    _check_messages(req)


def _check_tools(req: ChatRequest) -> set[str]:
    names: set[str] = set()
    for i, tool in enumerate(req.tools or ()):
        if isinstance(tool, FunctionTool):
            name = tool.function.name
            param = f"tools[{i}].function.name"
            if not FUNCTION_NAME.match(name):
                raise InvalidRequest(
                    f"Invalid '{param}': string does not match pattern. Expected a string "
                    "of letters, digits, underscores or dashes, at most 64 characters.",
                    param=param,
                    code="invalid_value",
                )
            params = tool.function.parameters
            if params is not None and params.get("type", "object") != "object":
                p = f"tools[{i}].function.parameters"
                raise InvalidRequest(
                    f"Invalid schema for function '{name}': schema must be a JSON Schema "
                    "of 'type: \"object\"'.",
                    param=p,
                )
            if name in names:
                raise InvalidRequest(
                    f"Invalid 'tools': duplicate function name '{name}'.", param="tools"
                )
            names.add(name)
    return names


def _check_tool_choice(req: ChatRequest, names: set[str]) -> None:
    choice = req.tool_choice
    if choice is None:
        return
    if not req.tools and choice != "none":
        raise InvalidRequest(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
            "are specified.",
            param="tool_choice",
        )
    if isinstance(choice, ToolChoiceFunction) and choice.function.name not in names:
        raise InvalidRequest(
            f"Invalid 'tool_choice': function '{choice.function.name}' is not among the "
            "declared tools.",
            param="tool_choice.function.name",
        )


def _check_messages(req: ChatRequest) -> None:
    pending: set[str] = set()
    for i, msg in enumerate(req.messages):
        if isinstance(msg, AssistantMessage):
            if (
                msg.content is None
                and not msg.tool_calls
                and msg.function_call is None
                and msg.refusal is None
                and msg.audio is None
            ):
                raise InvalidRequest(
                    f"Invalid 'messages[{i}]': an assistant message needs 'content' or "
                    "'tool_calls'.",
                    param=f"messages[{i}].content",
                )
            pending = {tc.id for tc in msg.tool_calls or ()}
        elif isinstance(msg, ToolMessage):
            if msg.tool_call_id not in pending:
                raise InvalidRequest(
                    f"Invalid parameter: messages with role 'tool' must be a response to a "
                    f"preceding message with 'tool_calls' (messages[{i}].tool_call_id "
                    f"'{msg.tool_call_id}' matches none).",
                    param=f"messages[{i}].tool_call_id",
                )
        else:
            pending = set()
        if isinstance(msg, UserMessage) and isinstance(msg.content, list):
            for j, part in enumerate(msg.content):
                if isinstance(part, ImagePart):
                    url = part.image_url.url
                    if not url.startswith(("http://", "https://", "data:image/")):
                        p = f"messages[{i}].content[{j}].image_url.url"
                        raise InvalidRequest(
                            f"Invalid '{p}': expected an http(s) URL or a base64 data URL "
                            "of an image.",
                            param=p,
                            code="invalid_image_url",
                        )


def last_user_text(req: ChatRequest) -> str:
    for msg in reversed(req.messages):
        if isinstance(msg, UserMessage):
            if isinstance(msg.content, str):
                return msg.content
            return " ".join(p.text for p in msg.content if isinstance(p, TextPart))
    return ""


class Usage(Struct, omit_defaults=False):
    """Token counts in OpenAI's terms (prompt includes cached, completion includes reasoning)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_write_tokens: int | None = None

    def plus(self, o: Usage) -> Usage:
        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        return Usage(
            prompt_tokens=self.prompt_tokens + o.prompt_tokens,
            completion_tokens=self.completion_tokens + o.completion_tokens,
            total_tokens=self.total_tokens + o.total_tokens,
            cached_tokens=add(self.cached_tokens, o.cached_tokens),
            reasoning_tokens=add(self.reasoning_tokens, o.reasoning_tokens),
            cache_write_tokens=add(self.cache_write_tokens, o.cache_write_tokens),
        )

    def to_openai(self) -> dict[str, Any]:
        ptd: dict[str, Any] = {"cached_tokens": self.cached_tokens or 0}
        if self.cache_write_tokens:
            ptd["cache_write_tokens"] = self.cache_write_tokens
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": ptd,
        }
        if self.reasoning_tokens is not None:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out

    @classmethod
    def from_openai(cls, u: dict[str, Any] | None) -> Usage | None:
        if not u:
            return None
        ptd = u.get("prompt_tokens_details") or {}
        ctd = u.get("completion_tokens_details") or {}
        prompt = int(u.get("prompt_tokens") or 0)
        completion = int(u.get("completion_tokens") or 0)
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=int(u.get("total_tokens") or prompt + completion),
            cached_tokens=ptd.get("cached_tokens"),
            reasoning_tokens=ctd.get("reasoning_tokens"),
        )
