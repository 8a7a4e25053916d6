"""Gemini API emulator (Google AI generativelanguage v1beta) on the sandbox app.

Routes: ``POST /v1beta/models/{model}:generateContent``,
``POST /v1beta/models/{model}:streamGenerateContent`` (``?alt=sse``: server-sent events framed
``data: <json>\\r\\n\\r\\n`` with no ``[DONE]``; without it: one JSON array streamed element by
element), ``GET /v1beta/models`` and ``GET /v1beta/models/{model}``. Point the gateway (or the
google-genai SDK) at ``Sandbox.gemini_base_url``. The key goes in ``x-goog-api-key`` or
``?key=``; a missing key is a 403 ``PERMISSION_DENIED``, a wrong one (when the sandbox has a
key) a 400 ``INVALID_ARGUMENT`` with reason ``API_KEY_INVALID``, like the real API.

Validation lives in ``_gemini_rules``; the answer text, tokenizer and JSON-schema values are
shared with the other emulators (``_reply``, ``_jsonschema_gen``), and so are the test hooks and
the control endpoints (``openai_chat``): queued faults (``POST /_sandbox/faults``, matched on the
model id of the URL) and the request log (``GET /_sandbox/requests``, ``x-goog-api-key`` masked).

Directives in the text of the last user turn: the shared ``[sandbox:latency=MS]``,
``[sandbox:chunk_delay=MS]``, ``[sandbox:error=STATUS|quota]``, ``[sandbox:retry_after=S]``
(the ``RetryInfo.retryDelay`` of a 429), ``[sandbox:hang]``, ``[sandbox:cut=N]``, plus
``[sandbox:blocked]`` (prompt blocked: no candidates, ``promptFeedback.blockReason: SAFETY``),
``[sandbox:safety]`` (a candidate with ``content: {}`` and ``finishReason: SAFETY``) and
``[sandbox:stream_error]`` (a 503 ``UNAVAILABLE`` error object mid-stream, then the end).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ._gemini_rules import (
    MODELS,
    GeminiError,
    GenerateParams,
    bad,
    call_payload,
    decode_b64,
    field_error,
    not_found,
    sign,
    validate,
)
from ._jsonschema_gen import generate, hint_words
from ._reply import (
    count_tokens,
    json_object_text,
    reply_text,
    stable_seed,
    strip_directives,
    sysrand,
    token_logprobs,
    tokenize,
    tool_result_text,
)
from ._rules import ApiError
from .openai_chat import (
    STATE,
    Hooks,
    SandboxState,
    abort,
    delay_or_hang,
    ensure_state,
    hooks_from_directives,
    hooks_from_fault,
    record,
    take_fault,
)

MAX_BODY = 20 * 1024 * 1024
EXTRA_DIRECTIVES = frozenset(("blocked", "safety", "stream_error"))
MEDIA_TOKENS = 258  # what Gemini counts for an image (or a document page)
FUNCTION_CALL_MESSAGE = "Model generated function call(s)."
MISSING_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). Please "
    "use API Key or other form of API consumer identity to call this API."
)
INVALID_KEY = "API key not valid. Please pass a valid API key."
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
OVERLOADED = "The model is overloaded. Please try again later."
STREAM_ERROR = {"error": {"code": 503, "message": OVERLOADED, "status": "UNAVAILABLE"}}
JSON_HEADERS = {"Content-Type": "application/json; charset=UTF-8"}
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
FILLERS = (
    "This answer comes from the Chatgate sandbox.",
    "It is generated deterministically from your request.",
    "No real model was called to write it.",
    "Send the same request again and you will get the same words.",
    "Every word and punctuation mark here is counted as a token.",
    "The sandbox speaks the Gemini generateContent wire format.",
    "Streaming sends these words in chunks of several tokens.",
    "Usage metadata is computed from this text.",
    "Function calls and structured JSON output are emulated as well.",
    "Latency, errors and dropped connections can be injected on demand.",
    "That should be enough to exercise the gateway.",
    "Nothing in this reply depends on the wall clock.",
    "The quick brown fox jumps over the lazy dog.",
    "Short sentences keep the token count predictable.",
    "Thoughts are counted apart from the visible answer.",
    "Let me know if you need anything else.",
    "Here is a second thought on the same topic.",
    "Deterministic output makes tests easy to write.",
    "A gateway should pass this text through unchanged.",
    "Finally, a closing sentence to round things off.",
)
_THOUGHTS = (
    ("Understanding the request", "I should answer clearly and keep it short."),
    ("Choosing an approach", "Nothing here needs a long derivation, so a direct answer is best."),
    ("Restating the question", "Let me restate the request before answering it."),
    ("Checking the details", "The sandbox writes this reasoning deterministically."),
    ("Drafting the reply", "A short, friendly reply will do."),
    ("Reviewing the answer", "I will quote the question back and add a few sentences."),
)
LEVEL_THOUGHTS = {"minimal": 24, "low": 160, "medium": 480, "high": 960}
SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "MEDIUM", "blocked": True},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
]
PROMPT_SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "HIGH"},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"},
]


def new_response_id() -> str:
    return "".join(sysrand.choices(_ID_CHARS, k=23))


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def quota_error(model: str, retry_after: float | None, limit: str) -> GeminiError:
    wait = 1.0 if retry_after is None else retry_after
    if limit != "0":
        metric = "generate_content_free_tier_requests"
        quota_id = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    else:
        metric = "generate_content_paid_tier_input_token_count"
        quota_id = "GenerateContentPaidTierInputTokensPerModelPerDay"
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": f"generativelanguage.googleapis.com/{metric}",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": limit,
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": _duration(wait)},
    ]
    return GeminiError(429, QUOTA_MESSAGE, details=details)


def injected_error(kind: str, model: str, retry_after: float | None) -> GeminiError:
    """The error a hook asked for, in Google's envelope."""
    if kind == "quota":
        return quota_error(model, retry_after, "0")
    status = int(kind)
    if status == 429:
        return quota_error(model, retry_after, "10")
    if status == 404:
        return not_found(model)
    message = {
        400: "Request contains an invalid argument.",
        401: "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        403: "The caller does not have permission",
        500: "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        503: OVERLOADED,
        504: "Deadline expired before operation could complete.",
    }.get(status, f"Error {status} injected by the Chatgate sandbox.")
    return GeminiError(status, message)


def _pretty(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=2).encode()


def _sse_json(obj: Any) -> bytes:
    # the recorded streams put a space after ':' but none after ','
    return json.dumps(obj, ensure_ascii=False, separators=(",", ": ")).encode()


def error_response(err: GeminiError, array: bool = False) -> web.Response:
    """A JSON error; ``:streamGenerateContent`` without ``alt=sse`` wraps it in an array."""
    body: Any = [err.body()] if array else err.body()
    return web.Response(body=_pretty(body), status=err.code, headers=JSON_HEADERS)


def _api_key(request: web.Request) -> str:
    key = request.headers.get("x-goog-api-key", "").strip()
    return key or request.query.get("key", "").strip()


def _check_auth(request: web.Request, state: SandboxState) -> None:
    key = _api_key(request)
    if not key:
        raise GeminiError(403, MISSING_KEY)
    if state.api_key is not None and not hmac.compare_digest(key.encode(), state.api_key.encode()):
        details: list[dict[str, Any]] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": INVALID_KEY,
            },
        ]
        raise GeminiError(400, INVALID_KEY, details=details)


# --------------------------------------------------------------------------------------------
# reading the request
# --------------------------------------------------------------------------------------------


def _texts(content: dict[str, Any]) -> str:
    return "\n".join(p["text"] for p in content["parts"] if "text" in p and not p.get("thought"))


def directive_text(params: GenerateParams) -> str:
    """Raw text of the last user turn (where ``[sandbox:...]`` directives live)."""
    user: dict[str, Any] | None = next(
        (c for c in reversed(params.contents) if c["role"] == "user"), None
    )
    return _texts(user) if user is not None else ""


def _last_user_with_text(params: GenerateParams) -> dict[str, Any] | None:
    found: dict[str, Any] | None = None
    for content in params.contents:
        if content["role"] == "user" and any("text" in p for p in content["parts"]):
            found = content
    return found


def _tool_results(params: GenerateParams) -> list[tuple[str, str]] | None:
    last = params.contents[-1]
    if last["role"] != "user":
        return None
    results = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
    if not results:
        return None
    return [
        (r["name"], json.dumps(r.get("response", {}), ensure_ascii=False, sort_keys=True))
        for r in results
    ]


def _modality(mime: str) -> str:
    low = mime.lower()
    if low.startswith("image/"):
        return "IMAGE"
    if low.startswith("audio/"):
        return "AUDIO"
    if low.startswith("video/"):
        return "VIDEO"
    if low == "application/pdf":
        return "DOCUMENT"
    return "TEXT"


def _part_tokens(part: dict[str, Any], counts: dict[str, int]) -> None:
    if "text" in part:
        counts["TEXT"] += count_tokens(part["text"])
    elif "inlineData" in part:
        blob = part["inlineData"]
        kind = _modality(blob.get("mimeType", ""))
        if kind == "TEXT":
            raw = decode_b64(blob.get("data", "")) or b""
            counts["TEXT"] += count_tokens(raw.decode("utf-8", "replace"))
        else:
            counts[kind] = counts.get(kind, 0) + MEDIA_TOKENS
    elif "fileData" in part:
        kind = _modality(part["fileData"].get("mimeType") or "image/*")
        counts[kind] = counts.get(kind, 0) + MEDIA_TOKENS
    elif "functionCall" in part:
        fc = part["functionCall"]
        counts["TEXT"] += 3 + count_tokens(fc["name"]) + count_tokens(json.dumps(fc.get("args")))
    elif "functionResponse" in part:
        fr = part["functionResponse"]
        counts["TEXT"] += 3 + count_tokens(fr["name"]) + count_tokens(json.dumps(fr["response"]))
    elif "executableCode" in part:
        counts["TEXT"] += count_tokens(part["executableCode"].get("code", ""))
    elif "codeExecutionResult" in part:
        counts["TEXT"] += count_tokens(part["codeExecutionResult"].get("output", ""))


def prompt_usage(params: GenerateParams) -> tuple[int, list[dict[str, Any]]]:
    """``(promptTokenCount, promptTokensDetails)`` for the request."""
    counts = {"TEXT": 0}
    for part in params.system_parts:
        _part_tokens(part, counts)
    for content in params.contents:
        for part in content["parts"]:
            _part_tokens(part, counts)
    for decl in params.declarations:
        shown = {k: v for k, v in decl.items() if k != "jsonSchema"}
        counts["TEXT"] += 5 + count_tokens(json.dumps(shown, sort_keys=True))
    counts["TEXT"] = max(1, counts["TEXT"])
    order = ("TEXT", "IMAGE", "AUDIO", "VIDEO", "DOCUMENT")
    details = [{"modality": m, "tokenCount": counts[m]} for m in order if counts.get(m)]
    return sum(counts.values()), details


# --------------------------------------------------------------------------------------------
# the answer
# --------------------------------------------------------------------------------------------


@dataclass
class Candidate:
    index: int
    finish: str
    parts: list[dict[str, Any]] = field(default_factory=list)  # visible parts, final form
    thought: str | None = None  # the thought summary (includeThoughts)
    thought_tokens: int = 0
    tokens: list[str] = field(default_factory=list)  # the text answer, tokenized
    visible_tokens: int = 0
    finish_message: str | None = None
    grounding: dict[str, Any] | None = None
    logprobs: list[dict[str, Any]] | None = None  # ChatCompletionTokenLogprob-like entries
    safety: bool = False

    @property
    def empty(self) -> bool:
        return not self.parts and not self.safety


@dataclass
class Plan:
    candidates: list[Candidate]
    prompt_tokens: int
    prompt_details: list[dict[str, Any]]
    tool_use_tokens: int = 0
    blocked: bool = False


def _mentions(text: str, name: str) -> bool:
    lower = text.lower()
    variants = {name.lower(), re.sub(r"[_.:-]", " ", name.lower())}
    return any(re.search(rf"(?<!\w){re.escape(v)}(?!\w)", lower) for v in variants)


_CALL_REQUEST = re.compile(r"\b(?:call|use)\s+(?:the|a|your)\s+(?:tool|function)s?\b", re.I)


def _functions_to_call(params: GenerateParams, user_text: str) -> list[dict[str, Any]]:
    """Mode ANY: the mentioned functions, else the first allowed one. AUTO / VALIDATED: the
    functions the user text names, or the first one when it says "call the tool"."""
    if not params.declarations or params.mode == "NONE":
        return []
    allowed = params.declarations
    if params.mode == "ANY" and params.allowed:
        allowed = [d for d in allowed if d["name"] in params.allowed]
    chosen = [d for d in allowed if _mentions(user_text, d["name"])]
    if not chosen and (params.mode == "ANY" or _CALL_REQUEST.search(user_text)):
        chosen = allowed[:1]
    return chosen


def _thinking_budget_tokens(params: GenerateParams, seed: int, index: int) -> int:
    if not params.thinking:
        return 0
    jitter = (seed >> 16) % 64 + index * 7
    level = params.thinking_level or params.model.default_level
    planned = LEVEL_THOUGHTS[level] if level else 300 + (seed >> 8) % 200
    planned += jitter
    if params.thinking_budget is not None:
        planned = min(planned, params.thinking_budget)
    return max(1, planned)


def _thought_summary(user_text: str, seed: int) -> str:
    echo = "".join(tokenize(user_text)[:20]).strip()
    head = f'The user wrote "{echo}".' if echo else "The user sent no text."
    rng = random.Random(seed ^ 0x7468696E6B)
    (t1, s1), (t2, s2) = rng.sample(_THOUGHTS, 2)
    return f"**{t1}**\n\n{head} {s1}\n\n\n**{t2}**\n\n{s2}\n\n\n"


def _gen_json(schema: Any, rng: random.Random, hints: list[str], path: str) -> Any:
    try:
        return generate(schema, rng, hints)
    except (KeyError, IndexError, ValueError, TypeError, RecursionError) as exc:
        raise field_error(path, f"unsupported schema: {exc}") from exc


def _answer_text(params: GenerateParams, ctx: dict[str, Any], rng: random.Random, i: int) -> str:
    seed = ctx["seed"]
    if params.mime == "text/x.enum" and params.schema is not None:
        values = [str(v) for v in params.schema.get("enum") or [] if v is not None]
        lower = ctx["user_text"].lower()
        hit = [v for v in values if v.lower() in lower]
        return hit[0] if hit else rng.choice(values)
    if params.mime == "application/json":
        if params.schema is not None:
            path = (
                "generation_config.response_schema"
                if "responseSchema" in params.config
                else "generation_config.response_json_schema"
            )
            value = _gen_json(params.schema, rng, ctx["hints"], path)
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return json_object_text(ctx["user_text"], seed, i)
    if ctx["results"] is not None:
        return tool_result_text(ctx["results"], seed, i, fillers=FILLERS)
    return reply_text(ctx["user_text"], seed, i, images=ctx["images"], fillers=FILLERS)


def _grounding(query: str, text: str) -> dict[str, Any]:
    slug = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-")[:40] or "search"
    return {
        "searchEntryPoint": {
            "renderedContent": f'<div class="container"><a class="chip" '
            f'href="https://www.google.com/search?q={slug}">{query}</a></div>'
        },
        "groundingChunks": [
            {
                "web": {
                    "uri": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/" + slug,
                    "title": "example.com",
                }
            }
        ],
        "groundingSupports": [
            {
                "segment": {"startIndex": 0, "endIndex": len(text.encode()), "text": text},
                "groundingChunkIndices": [0],
            }
        ],
        "webSearchQueries": [query],
    }


def make_plan(params: GenerateParams, directives: dict[str, str]) -> Plan:
    """Decide the candidates, their parts, finish reasons and token counts."""
    prompt, details = prompt_usage(params)
    if "blocked" in directives:
        return Plan([], prompt, details, blocked=True)
    if "safety" in directives:
        return Plan([Candidate(0, "SAFETY", safety=True)], prompt, details)
    seed = stable_seed(
        params.model.id,
        params.contents,
        params.system_parts,
        [{k: v for k, v in d.items() if k != "jsonSchema"} for d in params.declarations],
        params.mime,
        params.schema,
        params.seed,
    )
    user = _last_user_with_text(params)
    raw_user = _texts(user) if user is not None else ""
    user_text = strip_directives(raw_user)
    images = 0
    if user is not None:
        images = sum(
            1
            for p in user["parts"]
            if _modality((p.get("inlineData") or p.get("fileData") or {}).get("mimeType") or "")
            == "IMAGE"
        )
    results = _tool_results(params)
    calls = [] if results is not None else _functions_to_call(params, user_text)
    hint_text = user_text
    for decl in calls:
        hint_text = re.sub(re.escape(decl["name"]), " ", hint_text, flags=re.I)
    ctx = {
        "seed": seed,
        "user_text": user_text,
        "images": images,
        "results": results,
        "hints": hint_words(hint_text),
    }
    plan = Plan([], prompt, details)
    search_query = "".join(tokenize(user_text)[:12]).strip() or "sandbox"
    for i in range(params.candidate_count):
        cand = _plan_candidate(params, ctx, calls, i)
        if params.google_search and not calls and cand.tokens:
            cand.grounding = _grounding(search_query, "".join(cand.tokens))
            plan.tool_use_tokens = 40 + count_tokens(search_query)
        plan.candidates.append(cand)
    return plan


def _plan_candidate(
    params: GenerateParams, ctx: dict[str, Any], calls: list[dict[str, Any]], i: int
) -> Candidate:
    seed = ctx["seed"]
    rng = random.Random(seed + i)
    left = params.max_output
    thoughts = _thinking_budget_tokens(params, seed, i)
    if thoughts >= left:  # the thoughts used up maxOutputTokens: no visible parts at all
        return Candidate(i, "MAX_TOKENS", thought_tokens=left)
    left -= thoughts
    cand = Candidate(i, "STOP", thought_tokens=thoughts)
    if params.thinking and params.include_thoughts:
        cand.thought = _thought_summary(ctx["user_text"], seed + i)
    nonce = stable_seed(seed, i, "signature").to_bytes(8, "big") * 2
    if calls:
        for k, decl in enumerate(calls):
            path = f"tools.function_declarations.{decl['name']}.parameters"
            args = _gen_json(decl["jsonSchema"], rng, ctx["hints"], path)
            if not isinstance(args, dict):
                args = {}
            cost = 3 + count_tokens(decl["name"]) + count_tokens(json.dumps(args))
            if cost > left:  # calls are never cut in half
                cand.finish = "MAX_TOKENS"
                break
            part: dict[str, Any] = {"functionCall": {"name": decl["name"], "args": args}}
            if k == 0 and params.thinking:
                part["thoughtSignature"] = sign("c", call_payload(decl["name"], args), nonce)
            cand.parts.append(part)
            cand.visible_tokens += cost
            left -= cost
        if cand.finish == "STOP" and not params.model.gen3:
            cand.finish_message = FUNCTION_CALL_MESSAGE
        return cand
    text = _answer_text(params, ctx, rng, i)
    hits = [text.find(s) for s in params.stop if s in text]
    if hits:
        text = text[: min(hits)]
    toks = tokenize(text)
    if len(toks) > left:
        toks, cand.finish = toks[:left], "MAX_TOKENS"
    cand.tokens = toks
    cand.visible_tokens = len(toks)
    part = {"text": "".join(toks)}
    if params.thinking and (params.model.gen3 or params.include_thoughts):
        part["thoughtSignature"] = sign("t", b"", nonce)
    cand.parts.append(part)
    if params.response_logprobs and toks:
        cand.logprobs = token_logprobs(toks, seed + i, params.logprobs or 0)
    return cand


# --------------------------------------------------------------------------------------------
# bodies and stream chunks
# --------------------------------------------------------------------------------------------


def _usage(plan: Plan, visible: int, thoughts: int, show_visible: bool = True) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": plan.prompt_tokens}
    shown = visible if show_visible else 0
    if shown:
        usage["candidatesTokenCount"] = shown
    usage["totalTokenCount"] = plan.prompt_tokens + shown + thoughts + plan.tool_use_tokens
    usage["promptTokensDetails"] = plan.prompt_details
    if plan.tool_use_tokens:
        usage["toolUsePromptTokenCount"] = plan.tool_use_tokens
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _logprobs_result(entries: list[dict[str, Any]], top_n: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if top_n:
        result["topCandidates"] = [
            {
                "candidates": [
                    {"token": t["token"], "logProbability": t["logprob"]}
                    for t in sorted(e["top_logprobs"], key=lambda t: -t["logprob"])
                ]
            }
            for e in entries
        ]
    result["chosenCandidates"] = [
        {"token": e["token"], "logProbability": e["logprob"]} for e in entries
    ]
    return result


def _avg(entries: list[dict[str, Any]]) -> float:
    return float(sum(e["logprob"] for e in entries)) / len(entries)


def _candidate_body(
    cand: Candidate, parts: list[dict[str, Any]] | None, finish: bool
) -> dict[str, Any]:
    if cand.safety:
        content: dict[str, Any] = {}
    elif parts:
        content = {"parts": parts, "role": "model"}
    else:
        content = {"role": "model"}
    body: dict[str, Any] = {"content": content}
    if finish:
        body["finishReason"] = cand.finish
    body["index"] = cand.index
    if finish and cand.finish_message:
        body["finishMessage"] = cand.finish_message
    if finish and cand.safety:
        body["safetyRatings"] = SAFETY_RATINGS
    return body


def response_body(params: GenerateParams, plan: Plan, response_id: str) -> dict[str, Any]:
    """The non-streaming GenerateContentResponse."""
    visible = sum(c.visible_tokens for c in plan.candidates)
    thoughts = sum(c.thought_tokens for c in plan.candidates)
    body: dict[str, Any] = {}
    if plan.blocked:
        body["promptFeedback"] = {"blockReason": "SAFETY", "safetyRatings": PROMPT_SAFETY_RATINGS}
    else:
        cands = []
        for cand in plan.candidates:
            parts = list(cand.parts)
            if cand.thought is not None:
                parts.insert(0, {"text": cand.thought, "thought": True})
            cb = _candidate_body(cand, parts, True)
            if cand.grounding is not None:
                cb["groundingMetadata"] = cand.grounding
            if cand.logprobs:
                cb["avgLogprobs"] = _avg(cand.logprobs)
                cb["logprobsResult"] = _logprobs_result(cand.logprobs, params.logprobs or 0)
            cands.append(cb)
        body["candidates"] = cands
    body["usageMetadata"] = _usage(plan, visible, thoughts)
    body["modelVersion"] = params.model.id
    body["responseId"] = response_id
    return body


@dataclass
class _Step:
    """One candidate's share of one stream chunk."""

    parts: list[dict[str, Any]] | None
    visible: int  # cumulative visible tokens after this step
    thoughts: int  # cumulative thought tokens after this step
    show_visible: bool = True
    finish: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _pieces(tokens: list[str], rng: random.Random) -> list[list[str]]:
    """Stream fragments: a short first one, then 4..16 tokens each."""
    out: list[list[str]] = []
    k = 0
    while k < len(tokens):
        n = rng.randint(1, 4) if not out else rng.randint(4, 16)
        out.append(tokens[k : k + n])
        k += n
    return out


def _steps(cand: Candidate, params: GenerateParams, seed: int) -> list[_Step]:
    rng = random.Random(seed * 31 + cand.index)
    steps: list[_Step] = []
    if cand.safety or cand.empty:
        return [_Step(None, 0, cand.thought_tokens, finish=True)]
    thoughts = cand.thought_tokens
    if cand.thought is not None:
        paras = [p + "\n\n\n" for p in cand.thought.split("\n\n\n") if p]
        for k, para in enumerate(paras):
            so_far = thoughts * (k + 1) // len(paras)
            steps.append(_Step([{"text": para, "thought": True}], 0, so_far))
    top_n = params.logprobs or 0
    if cand.tokens or (cand.parts and "text" in cand.parts[0]):
        part0 = cand.parts[0]
        pieces = _pieces(cand.tokens, rng) or [[]]
        done = 0
        for k, piece in enumerate(pieces):
            part: dict[str, Any] = {"text": "".join(piece)}
            if k == 0 and "thoughtSignature" in part0:
                part["thoughtSignature"] = part0["thoughtSignature"]
            step = _Step([part], done + len(piece), thoughts)
            step.show_visible = not (k == 0 and len(pieces) > 1)
            if cand.logprobs:
                chunk_lp = cand.logprobs[done : done + len(piece)]
                if chunk_lp:
                    step.extra["logprobsResult"] = _logprobs_result(chunk_lp, top_n)
            done += len(piece)
            steps.append(step)
    else:  # function calls arrive whole, in one chunk
        steps.append(_Step(list(cand.parts), cand.visible_tokens, thoughts))
    if params.model.gen3 and cand.finish == "STOP":
        steps.append(_Step([{"text": ""}], cand.visible_tokens, thoughts))
    last = steps[-1]
    last.finish = True
    last.show_visible = True
    if cand.grounding is not None:
        last.extra["groundingMetadata"] = cand.grounding
    if cand.logprobs:
        last.extra["avgLogprobs"] = _avg(cand.logprobs)
    return steps


def stream_chunks(params: GenerateParams, plan: Plan, response_id: str) -> list[dict[str, Any]]:
    """Every chunk of the stream: each a full GenerateContentResponse with the new parts."""
    head = {"modelVersion": params.model.id, "responseId": response_id}
    if plan.blocked:
        body = response_body(params, plan, response_id)
        return [body]
    seed = stable_seed(params.model.id, params.contents, "stream")
    per_cand = [_steps(c, params, seed) for c in plan.candidates]
    chunks: list[dict[str, Any]] = []
    for k in range(max(len(s) for s in per_cand)):
        cands = []
        visible = thoughts = 0
        show = True
        for cand, steps in zip(plan.candidates, per_cand, strict=True):
            step = steps[min(k, len(steps) - 1)]
            visible += step.visible
            thoughts += step.thoughts
            if k >= len(steps):
                continue
            show = show and step.show_visible
            body = _candidate_body(cand, step.parts, step.finish)
            body.update(step.extra)  # grounding / logprobs after the fixed keys
            cands.append(body)
        chunks.append({"candidates": cands, "usageMetadata": _usage(plan, visible, thoughts,
                                                                    show), **head})  # fmt: skip
    return chunks


# --------------------------------------------------------------------------------------------
# handlers
# --------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def _directives(params: GenerateParams, hooks: Hooks) -> dict[str, str]:
    try:
        return hooks_from_directives(directive_text(params), hooks, EXTRA_DIRECTIVES)
    except ApiError as exc:
        raise bad(exc.message) from exc


async def model_route(request: web.Request) -> web.StreamResponse:
    tail = request.match_info["tail"]
    model_id, _, method = tail.partition(":")
    if not method:
        return await get_model(request, model_id)
    if method not in ("generateContent", "streamGenerateContent"):
        return error_response(GeminiError(404, f"Method not found: {method}."))
    if request.method != "POST":
        return error_response(GeminiError(405, "Method Not Allowed", "UNIMPLEMENTED"))
    return await generate_content(request, model_id, method)


async def generate_content(request: web.Request, model_id: str, method: str) -> web.StreamResponse:
    state = request.app[STATE]
    stream = method == "streamGenerateContent"
    sse = stream and request.query.get("alt") == "sse"
    raw = await request.read()
    try:
        body: Any = json.loads(raw, parse_constant=_reject_constant) if raw.strip() else {}
        parsed = True
    except (ValueError, RecursionError):
        body, parsed = raw.decode("utf-8", "replace"), False
    record(request, state, body)
    try:
        _check_auth(request, state)
        if len(raw) > MAX_BODY:
            raise bad(f"Request payload size exceeds the limit: {MAX_BODY} bytes.")
        if not parsed:
            raise bad("Invalid JSON payload received. Unexpected token.")
        model = MODELS.get(model_id)
        if model is None:
            raise not_found(model_id, method)
        fault = take_fault(state, model_id)
        hooks = hooks_from_fault(fault)
        if fault is not None and (hooks.error is not None or hooks.hang):
            if not await delay_or_hang(request, state, hooks):  # before validation: an outage
                return web.Response(status=499)
            if hooks.error is not None:
                raise injected_error(hooks.error, model_id, hooks.retry_after)
        params = validate(body, model)
        prompt, _ = prompt_usage(params)
        if prompt > model.input_limit:
            raise bad(
                f"The input token count ({prompt}) exceeds the maximum number of tokens "
                f"allowed ({model.input_limit})."
            )
        directives = _directives(params, hooks)
        if not await delay_or_hang(request, state, hooks):
            return web.Response(status=499)
        if hooks.error is not None:
            raise injected_error(hooks.error, model_id, hooks.retry_after)
        plan = make_plan(params, directives)
    except GeminiError as err:
        return error_response(err, array=stream and not sse)
    response_id = new_response_id()
    if stream:
        chunks: list[Any] = stream_chunks(params, plan, response_id)
        if "stream_error" in directives:
            keep = min(2, max(1, len(chunks) - 1))
            chunks = [*chunks[:keep], STREAM_ERROR]
        return await _send_stream(request, chunks, sse, hooks)
    data = _pretty(response_body(params, plan, response_id))
    if hooks.cut is None:
        return web.Response(body=data, headers=JSON_HEADERS)
    out = web.StreamResponse(headers=JSON_HEADERS)
    out.content_length = len(data)
    await out.prepare(request)
    await out.write(data[: len(data) // 2])
    abort(request)
    return out


async def _send_stream(
    request: web.Request, chunks: list[Any], sse: bool, hooks: Hooks
) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream"} if sse else JSON_HEADERS
    )
    await resp.prepare(request)
    delay = hooks.chunk_delay_ms / 1000
    try:
        for k, chunk in enumerate(chunks):
            if hooks.cut is not None and k >= hooks.cut:
                break
            if k and delay:
                await asyncio.sleep(delay)
            if sse:
                await resp.write(b"data: " + _sse_json(chunk) + b"\r\n\r\n")
            else:
                await resp.write((b"[" if k == 0 else b"\n,\r\n") + _pretty(chunk))
        if hooks.cut is not None:  # the connection drops after `cut` chunks
            abort(request)
            return resp
        if not sse:
            await resp.write(b"\n]" if chunks else b"[]")
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away mid-stream
    return resp


def _model_info(model: Any) -> dict[str, Any]:
    return {
        "name": f"models/{model.id}",
        "version": model.id.removeprefix("gemini-"),
        "displayName": model.display_name,
        "description": f"{model.display_name} (emulated by the Chatgate sandbox)",
        "inputTokenLimit": model.input_limit,
        "outputTokenLimit": model.output_limit,
        "supportedGenerationMethods": ["generateContent", "countTokens", "streamGenerateContent"],
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
        "thinking": True,
    }


async def list_models(request: web.Request) -> web.Response:
    try:
        _check_auth(request, request.app[STATE])
    except GeminiError as err:
        return error_response(err)
    models = [_model_info(m) for m in MODELS.values()]
    return web.Response(body=_pretty({"models": models}), headers=JSON_HEADERS)


async def get_model(request: web.Request, model_id: str) -> web.Response:
    try:
        _check_auth(request, request.app[STATE])
        model = MODELS.get(model_id)
        if model is None:
            raise GeminiError(404, f"models/{model_id} is not found for API version v1beta.")
    except GeminiError as err:
        return error_response(err)
    return web.Response(body=_pretty(_model_info(model)), headers=JSON_HEADERS)


async def unknown_url(request: web.Request) -> web.Response:
    return error_response(GeminiError(404, f"Invalid URL ({request.method} {request.path})"))


def setup(app: web.Application, api_key: str | None = None) -> None:
    """Install the Gemini API routes (``/v1beta/...``) on ``app``, sharing the sandbox state."""
    ensure_state(app, api_key)
    r = app.router
    r.add_get("/v1beta/models", list_models)
    r.add_route("*", "/v1beta/models/{tail}", model_route)
    r.add_route("*", "/v1beta/{tail:.*}", unknown_url)
