"""Google Gemini (generativelanguage v1beta) upstream: generateContent and
streamGenerateContent?alt=sse.

Parameter table (client -> upstream), checkable against ../shared/protocols/mapping.md:

| OpenAI                        | Gemini                                                | decision |
|-------------------------------|-------------------------------------------------------|----------|
| model                         | URL path models/{model}:generateContent               | exact |
| system / developer messages   | systemInstruction.parts[].text                        | mid-conversation ones hoisted |
| user / assistant              | contents role user / model (same-role turns merged)    | exact |
| image_url data:               | inlineData {mimeType, data}                           | exact |
| image_url http(s)             | fileData {mimeType from the extension, fileUri}       | unknown extension: 400 |
| assistant tool_calls          | functionCall {name, args} (+ thoughtSignature carried in the tool call id) | exact |
| tool messages                 | functionResponse {name (from the matching call), response} in a user turn | JSON object as is, else {"output": text} |
| tools                         | functionDeclarations {name, description, parametersJsonSchema} | the JSON Schema is sent as is (parametersJsonSchema): nothing lost but `strict` |
| tool_choice auto/none/required/named | functionCallingConfig AUTO/NONE/ANY/ANY+allowedFunctionNames | exact |
| parallel_tool_calls: false    | -                                                     | dropped, reported (Gemini may still return several calls) |
| temperature, top_p            | temperature, topP                                     | exact |
| max_tokens / max_completion_tokens | maxOutputTokens (thoughts count inside it)       | exact |
| stop                          | stopSequences                                         | exact |
| n                             | candidateCount                                        | exact |
| seed, presence_penalty, frequency_penalty | seed, presencePenalty, frequencyPenalty   | exact |
| logprobs / top_logprobs       | responseLogprobs / logprobs                           | approx: bytes null |
| response_format json_object   | responseMimeType application/json                     | exact |
| response_format json_schema   | responseMimeType + responseJsonSchema                 | exact |
| reasoning_effort              | thinkingConfig: thinkingLevel (Gemini 3) or thinkingBudget (2.5), includeThoughts | per-model tables in profiles.yaml |
| user / safety_identifier      | -                                                     | dropped silently (a pure hint) |
| logit_bias and OpenAI-only fields (metadata, store, ...) | -                          | 400 naming them, or dropped + reported |
| options.web_search (-all)     | tools googleSearch                                    | exact |

Back: text parts -> content, thought parts -> reasoning_content, functionCall -> tool_calls
(ids made here; a thoughtSignature rides inside the id and is restored on the way back),
finishReason -> finish_reason, usageMetadata -> usage (thoughts are reasoning tokens).
"""

from __future__ import annotations

import os
import re
from typing import Any

import msgspec

from ..config import Deployment, Profile, Provider
from ..errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    RateLimited,
    StreamInterrupted,
    UpstreamError,
)
from ..schema import (
    AssistantMessage,
    AudioPart,
    ChatRequest,
    CustomTool,
    DeveloperMessage,
    FilePart,
    FunctionMessage,
    FunctionTool,
    ImagePart,
    JSONObjectFormat,
    JSONSchemaFormat,
    SystemMessage,
    TextPart,
    ToolChoiceFunction,
    ToolMessage,
    Usage,
    UserMessage,
)
from ._shared import (
    OPENAI_ONLY,
    ChunkWriter,
    assistant_text,
    completion,
    decode_body,
    decode_event,
    error_object,
    function_role,
    scrub,
    text_of,
    tool_call_args,
)
from .base import Context, UpstreamRequest

MIN_OUTPUT = 1
NATIVE_N = True
UNSUPPORTED = OPENAI_ONLY
FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
            "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"}  # fmt: skip
SIG = "__thought__"  # tool call id = "call_<id>" + SIG + thoughtSignature
# Google's documented stand-in for a function call whose signature was never seen (history
# from another model or vendor): Gemini 3 accepts it instead of refusing the turn.
NO_SIGNATURE = "skip_thought_signature_validator"
NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}$")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.S)
_EXT = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
        "gif": "image/gif", "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf"}  # fmt: skip

_decode = msgspec.json.decode
_encode = msgspec.json.encode


# --- request ---------------------------------------------------------------------------


def build_request(
    req: ChatRequest, dep: Deployment, provider: Provider, ctx: Context, profile: Profile
) -> UpstreamRequest:
    body: dict[str, Any] = {}
    system, contents = _contents(req, ctx, profile.thought_signatures)
    body["contents"] = contents
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    tools, tool_config = _tools(req, dep, ctx)
    if tools:
        body["tools"] = tools
    if tool_config:
        body["toolConfig"] = tool_config
    gen = _generation_config(req, dep, profile)
    ctx.max_output = gen.get("maxOutputTokens")
    if gen:
        body["generationConfig"] = gen
    base = provider.base_url.rstrip("/")
    if req.stream:
        url = f"{base}/v1beta/models/{dep.model}:streamGenerateContent?alt=sse"
    else:
        url = f"{base}/v1beta/models/{dep.model}:generateContent"
    headers = {"content-type": "application/json", **provider.headers}
    if provider.api_key:
        headers["x-goog-api-key"] = provider.api_key
    return UpstreamRequest(url=url, headers=headers, body=_encode(body), stream=bool(req.stream))


def split_call_id(call_id: str) -> tuple[str, str | None]:
    head, sep, sig = call_id.partition(SIG)
    return head, (sig if sep else None)


def _contents(req: ChatRequest, ctx: Context, signatures: bool) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    named = False

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for i, msg in enumerate(req.messages):
        if getattr(msg, "name", None) and not isinstance(msg, FunctionMessage):
            named = True
        if isinstance(msg, (SystemMessage, DeveloperMessage)):
            text = text_of(msg.content)
            if text:
                system.append(text)
        elif isinstance(msg, UserMessage):
            add("user", _user_parts(msg, i))
        elif isinstance(msg, AssistantMessage):
            add("model", _model_parts(msg, i, names))
        elif isinstance(msg, ToolMessage):
            name = names.get(msg.tool_call_id)
            if name is None:
                raise InvalidRequest(
                    "A tool message must answer a tool call of an earlier assistant message.",
                    param=f"messages[{i}].tool_call_id",
                )
            text = text_of(msg.content)
            try:
                value = _decode(text) if text.strip() else None
            except msgspec.DecodeError:
                value = None
            response = value if isinstance(value, dict) else {"output": text}
            add("user", [{"functionResponse": {"name": name, "response": response}}])
        else:
            raise function_role(i)
    if named:
        ctx.dropped.append("messages[].name")
    if not contents:
        raise InvalidRequest(
            "The conversation needs at least one user or assistant message besides the "
            "system prompt.",
            param="messages",
        )
    if signatures:
        for content in contents:
            calls = [p for p in content["parts"] if "functionCall" in p]
            if calls and "thoughtSignature" not in calls[0]:
                calls[0]["thoughtSignature"] = NO_SIGNATURE
    return "\n\n".join(system), contents


def _user_parts(msg: UserMessage, i: int) -> list[dict[str, Any]]:
    if isinstance(msg.content, str):
        return [{"text": msg.content}] if msg.content else []
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(msg.content):
        param = f"messages[{i}].content[{j}]"
        if isinstance(part, TextPart):
            if part.text:
                parts.append({"text": part.text})
        elif isinstance(part, ImagePart):
            parts.append(_media(part.image_url.url, param + ".image_url.url"))
        elif isinstance(part, FilePart):
            if not part.file.file_data:
                raise InvalidRequest(
                    "Files must be given inline as a base64 data URL in 'file_data'.",
                    param=param + ".file",
                    code="unsupported_value",
                )
            parts.append(_media(part.file.file_data, param + ".file.file_data"))
        elif isinstance(part, AudioPart):
            fmt = part.input_audio.format
            parts.append(
                {"inlineData": {"mimeType": f"audio/{fmt}", "data": part.input_audio.data}}
            )
    return parts


def _media(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        m = _DATA_URL.match(url)
        if not m:
            raise InvalidRequest("Invalid data URL: expected base64.", param=param)
        return {"inlineData": {"mimeType": m.group("mime").lower(), "data": m.group("data")}}
    ext = os.path.splitext(url.split("?", 1)[0])[1].lstrip(".").lower()
    mime = _EXT.get(ext)
    if mime is None:
        raise InvalidRequest(
            "Cannot tell the media type of this URL from its extension (png, jpg, webp, gif, "
            "heic, pdf); send the image as a base64 data URL instead.",
            param=param,
            code="unsupported_value",
        )
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _model_parts(msg: AssistantMessage, i: int, names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": t} for t in assistant_text(msg)]
    for j, tc in enumerate(msg.tool_calls or ()):
        name, args = tool_call_args(tc, i, j)
        names[tc.id] = name
        part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        _, sig = split_call_id(tc.id)
        if sig:
            part["thoughtSignature"] = sig
        parts.append(part)
    return parts


def _tools(
    req: ChatRequest, dep: Deployment, ctx: Context
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    decls: list[dict[str, Any]] = []
    for i, tool in enumerate(req.tools or ()):
        if isinstance(tool, CustomTool):
            raise InvalidRequest(
                "Custom tools are not supported by this model; use function tools.",
                param=f"tools[{i}].type",
                code="unsupported_value",
            )
        assert isinstance(tool, FunctionTool)
        fn = tool.function
        if not NAME.match(fn.name):
            raise InvalidRequest(
                f"Function name '{fn.name}' is not accepted by this model: it must start with "
                "a letter or underscore.",
                param=f"tools[{i}].function.name",
            )
        d: dict[str, Any] = {"name": fn.name}
        if fn.description:
            d["description"] = fn.description
        if fn.parameters is not None:
            d["parametersJsonSchema"] = {k: v for k, v in fn.parameters.items() if k != "$schema"}
        decls.append(d)
    tools: list[dict[str, Any]] = [{"functionDeclarations": decls}] if decls else []
    if dep.options.get("web_search"):
        tools.append({"googleSearch": {}})
    choice = req.tool_choice
    config: dict[str, Any] | None = None
    if choice == "auto":
        config = {"mode": "AUTO"}
    elif choice == "none":
        config = {"mode": "NONE"}
    elif choice == "required":
        config = {"mode": "ANY"}
    elif isinstance(choice, ToolChoiceFunction):
        config = {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
    elif choice is not None:
        raise InvalidRequest(
            "This form of 'tool_choice' is not supported by this model.",
            param="tool_choice",
            code="unsupported_value",
        )
    if req.parallel_tool_calls is False and decls:
        ctx.dropped.append("parallel_tool_calls")
    return tools, ({"functionCallingConfig": config} if config else None)


def _generation_config(req: ChatRequest, dep: Deployment, profile: Profile) -> dict[str, Any]:
    g: dict[str, Any] = {}
    if req.temperature is not None:
        g["temperature"] = req.temperature
    if req.top_p is not None:
        g["topP"] = req.top_p
    max_tokens = req.max_completion_tokens or req.max_tokens
    if max_tokens is not None:
        g["maxOutputTokens"] = max_tokens
    if req.stop is not None:
        g["stopSequences"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    if req.n is not None and req.n > 1:
        g["candidateCount"] = req.n
    if req.seed is not None:
        g["seed"] = req.seed
    if req.presence_penalty:
        g["presencePenalty"] = req.presence_penalty
    if req.frequency_penalty:
        g["frequencyPenalty"] = req.frequency_penalty
    if req.logprobs:
        g["responseLogprobs"] = True
        if req.top_logprobs:
            g["logprobs"] = req.top_logprobs
    fmt = req.response_format
    if isinstance(fmt, JSONSchemaFormat):
        g["responseMimeType"] = "application/json"
        if fmt.json_schema.schema is not None:
            g["responseJsonSchema"] = fmt.json_schema.schema
    elif isinstance(fmt, JSONObjectFormat):
        g["responseMimeType"] = "application/json"
    # Thinking models: ask for thought summaries so reasoning can be returned; the effort
    # maps through the profile's table (the allowed efforts were checked by the profile).
    levels, budgets = profile.thinking_levels, profile.thinking_budgets
    if levels is not None or budgets is not None:
        thinking: dict[str, Any] = {"includeThoughts": True}
        effort = req.reasoning_effort
        if effort is not None and levels is not None and effort in levels:
            thinking["thinkingLevel"] = levels[effort]
        elif effort is not None and budgets is not None and effort in budgets:
            thinking["thinkingBudget"] = budgets[effort]
            if budgets[effort] == 0:
                del thinking["includeThoughts"]
        g["thinkingConfig"] = thinking
    return g


# --- response --------------------------------------------------------------------------


def usage_from(m: dict[str, Any]) -> Usage:
    prompt = int(m.get("promptTokenCount") or 0) + int(m.get("toolUsePromptTokenCount") or 0)
    thoughts = int(m.get("thoughtsTokenCount") or 0)
    completion = int(m.get("candidatesTokenCount") or 0) + thoughts
    cached = m.get("cachedContentTokenCount")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=int(cached) if cached is not None else 0,
        reasoning_tokens=thoughts,
    )


def finish_of(reason: str | None, has_calls: bool) -> str:
    if reason in FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if has_calls else "stop"


def _call(part: dict[str, Any], ctx: Context, cand: int, k: int) -> dict[str, Any]:
    fc = part["functionCall"]
    call_id = fc.get("id") or f"call_{ctx.response_id[-12:]}_{cand}_{k}"
    sig = part.get("thoughtSignature")
    if sig:
        call_id += SIG + sig
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": fc.get("name"), "arguments": _encode(fc.get("args") or {}).decode()},
    }


def _logprobs(cand: dict[str, Any]) -> dict[str, Any] | None:
    res = cand.get("logprobsResult")
    if not res:
        return None
    tops = res.get("topCandidates") or []
    content = []
    for i, chosen in enumerate(res.get("chosenCandidates") or ()):
        alts = tops[i].get("candidates", []) if i < len(tops) else []
        content.append(
            {
                "token": chosen.get("token", ""),
                "logprob": chosen.get("logProbability", 0.0),
                "bytes": None,
                "top_logprobs": [
                    {"token": a.get("token", ""), "logprob": a.get("logProbability", 0.0),
                     "bytes": None}
                    for a in alts
                ],
            }
        )  # fmt: skip
    return {"content": content, "refusal": None}


def _blocked(data: dict[str, Any]) -> GatewayError | None:
    fb = data.get("promptFeedback") or {}
    if not data.get("candidates") and fb.get("blockReason"):
        return InvalidRequest(
            f"The prompt was blocked by the model provider's safety filters ({fb['blockReason']}).",
            param="messages",
            code="content_filter",
        )
    return None


def parse_response(body: bytes, ctx: Context) -> tuple[bytes, Usage | None]:
    data = decode_body(body)
    if not isinstance(data, dict):
        raise UpstreamError("The upstream provider returned an unexpected response.")
    blocked = _blocked(data)
    if blocked is not None:
        raise blocked
    choices = []
    for pos, cand in enumerate(data.get("candidates") or ()):
        index = cand.get("index", pos)
        text: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in (cand.get("content") or {}).get("parts") or ():
            if "functionCall" in part:
                calls.append(_call(part, ctx, index, len(calls)))
            elif "text" in part:
                (thoughts if part.get("thought") else text).append(part["text"])
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(text) if any(text) else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": _logprobs(cand),
                "finish_reason": finish_of(cand.get("finishReason"), bool(calls)),
            }
        )
    if not choices:
        raise UpstreamError("The upstream provider returned no candidates.")
    usage = usage_from(data.get("usageMetadata") or {})
    return completion(ctx, choices, usage), usage


# --- streaming -------------------------------------------------------------------------


class GeminiStream(ChunkWriter):
    """Each SSE chunk is a whole GenerateContentResponse holding only the new parts; the
    stream ends when the connection closes (no terminator)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._started: set[int] = set()
        self._calls: dict[int, int] = {}  # candidate -> tool calls so far
        self._finished: set[int] = set()

    def feed(self, data: bytes) -> bytes:
        ev = decode_event(data)
        if "error" in ev:
            err = ev["error"] if isinstance(ev["error"], dict) else {}
            raise StreamInterrupted(
                str(err.get("message") or "The upstream stream failed."),
                code=str(err.get("status") or "upstream_stream_error").lower(),
            )
        blocked = _blocked(ev)
        if blocked is not None:
            raise StreamInterrupted(blocked.message, code="content_filter")
        if ev.get("usageMetadata"):
            self.usage = usage_from(ev["usageMetadata"])
        out = b""
        for pos, cand in enumerate(ev.get("candidates") or ()):
            index = cand.get("index", pos)
            if index not in self._started:
                self._started.add(index)
                out += self._chunk(
                    {"role": "assistant", "content": "", "refusal": None}, index=index
                )
            for part in (cand.get("content") or {}).get("parts") or ():
                if "functionCall" in part:
                    k = self._calls.get(index, 0)
                    self._calls[index] = k + 1
                    call = _call(part, self._ctx, index, k)
                    out += self._chunk({"tool_calls": [{"index": k, **call}]}, index=index)
                elif part.get("text"):
                    key = "reasoning_content" if part.get("thought") else "content"
                    out += self._chunk({key: part["text"]}, index=index)
            reason = cand.get("finishReason")
            if reason and index not in self._finished:
                self._finished.add(index)
                self.finish_reason = finish_of(reason, self._calls.get(index, 0) > 0)
                out += self._chunk({}, self.finish_reason, index=index)
        return out

    def close(self) -> bytes:
        if not self._finished or self._finished != self._started:
            raise StreamInterrupted("The upstream stream ended before it was complete.")
        self.done = True
        return self._usage_chunk()


def stream_translator(ctx: Context) -> GeminiStream:
    return GeminiStream(ctx)


# --- errors ----------------------------------------------------------------------------


def parse_error(
    status: int, headers: dict[str, str], body: bytes, secret: str | None
) -> GatewayError:
    err = error_object(body)
    gstatus = str(err.get("status") or "")
    message = str(err.get("message") or f"Upstream returned HTTP {status}.")
    message = scrub(message, secret)
    details = err.get("details") or []
    reasons = {d.get("reason") for d in details if isinstance(d, dict)}
    retry: dict[str, str] = {}
    for d in details:
        delay = d.get("retryDelay") if isinstance(d, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                retry["retry-after"] = str(max(1, round(float(delay[:-1]))))
            except ValueError:
                pass
    if "retry-after" in headers:
        retry["retry-after"] = headers["retry-after"]
    if status in (401, 403) or "API_KEY_INVALID" in reasons or gstatus == "PERMISSION_DENIED":
        return UpstreamError(
            "The upstream provider refused the gateway's credentials; "
            "the gateway operator has been told in the logs.",
            code="upstream_auth_failed",
        )
    if status == 429 or gstatus == "RESOURCE_EXHAUSTED":
        return RateLimited(message, code="rate_limit_exceeded", headers=retry)
    if status == 404 or gstatus == "NOT_FOUND":
        return NotFound(message, code="model_not_found")
    if 400 <= status < 500:
        return InvalidRequest(message, code=gstatus.lower() or None)
    return UpstreamError(
        message,
        status=status if status in (500, 502, 503, 504) else 502,
        code=gstatus.lower() or "upstream_error",
        headers=retry,
    )
