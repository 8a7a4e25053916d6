"""What the emulated model answers: deterministic text, tokens, logprobs, tool calls, and the
``chat.completion`` body / ``chat.completion.chunk`` sequence built from them.

Every choice is driven by a seed derived from the request, so the same request always gets the
same answer. Only ids (``rand_id``), timestamps and obfuscation padding are random.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import string
from dataclasses import dataclass
from typing import Any

from ._jsonschema_gen import generate, hint_words
from ._rules import EFFORT_REASONING_TOKENS, ApiError, ChatParams

# A GPT-2-style pre-tokenizer: contractions, words with their leading space, runs of up to three
# digits, punctuation runs and whitespace. ``"".join(tokenize(s)) == s`` holds for every string.
_TOKEN_RE = re.compile(
    r"'(?:s|t|re|ve|m|ll|d)\b| ?[^\W\d_]+| ?\d{1,3}| ?_+| ?[^\s\w]+|\s+(?!\S)|\s+|.",
    re.DOTALL,
)

_ALNUM = string.ascii_letters + string.digits
sysrand = random.SystemRandom()  # ids and obfuscation padding are random on purpose
_MAX_ECHO_TOKENS = 40
_FILLERS = (
    "This answer comes from the Chatgate sandbox.",
    "It is generated deterministically from your request.",
    "No real model was called to write it.",
    "Send the same request again and you will get the same words.",
    "Every word and punctuation mark here is counted as a token.",
    "The sandbox speaks the OpenAI Chat Completions wire format.",
    "Streaming sends these words a token at a time.",
    "Usage numbers are computed from this text.",
    "Tool calls and structured JSON output are emulated as well.",
    "Latency, errors and dropped connections can be injected on demand.",
    "That should be enough to exercise the gateway.",
    "Nothing in this reply depends on the wall clock.",
    "The quick brown fox jumps over the lazy dog.",
    "Short sentences keep the token count predictable.",
    "Reasoning tokens are counted but never shown.",
    "Let me know if you need anything else.",
    "Here is a second thought on the same topic.",
    "Deterministic output makes tests easy to write.",
    "A gateway should pass this text through unchanged.",
    "Finally, a closing sentence to round things off.",
)
_ALTERNATIVES = (
    " the", " a", ",", ".", " and", " to", " of", " is", " in", " it",
    " that", " you", " for", " on", " with", " this", " as", " are", " be", "!",
    " I", " we",
)  # fmt: skip
_DIRECTIVE_RE = re.compile(r"\[sandbox:([a-z_]+)(?:=([^\]]*))?\]")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into tokens; joining them gives back ``text`` exactly."""
    return _TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def stable_seed(*parts: Any) -> int:
    """A 64-bit seed from any JSON-able values (order of dict keys does not matter)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "big")


def parse_directives(text: str) -> dict[str, str]:
    """``[sandbox:key=value]`` / ``[sandbox:key]`` markers -> ``{key: value or ""}``."""
    return {m.group(1): (m.group(2) or "").strip() for m in _DIRECTIVE_RE.finditer(text)}


def strip_directives(text: str) -> str:
    return re.sub(r"[ \t]{2,}", " ", _DIRECTIVE_RE.sub("", text)).strip()


def _clip(text: str, max_tokens: int) -> str:
    toks = tokenize(text.strip())
    return "".join(toks[:max_tokens]).strip()


def _fill(
    head: str, rng: random.Random, index: int, seed: int, fillers: tuple[str, ...] = _FILLERS
) -> str:
    target = rng.randint(20, 60)
    parts = [head] if head else []
    start = (seed + index) % len(fillers)
    step = 1 + (seed // len(fillers)) % (len(fillers) - 1)
    while math.gcd(step, len(fillers)) != 1:
        step += 1
    k = 0
    text = " ".join(parts)
    while count_tokens(text) < target and k < len(fillers):
        parts.append(fillers[(start + k * step) % len(fillers)])
        text = " ".join(parts)
        k += 1
    return text


def reply_text(
    user_text: str,
    seed: int,
    index: int = 0,
    images: int = 0,
    fillers: tuple[str, ...] = _FILLERS,
) -> str:
    """The assistant's answer to ``user_text``: a quote of (up to 40 tokens of) it plus filler.

    ``index`` selects the choice (``n > 1``): each index starts from a different filler sentence,
    so choices differ for ``n <= 20``. ``fillers`` lets another protocol's emulator use its own
    filler sentences.
    """
    rng = random.Random(seed * 131 + index)
    echo = _clip(user_text, _MAX_ECHO_TOKENS)
    head = f'You said: "{echo}".' if echo else "Hello!"
    if images:
        head += f" I can see {images} image{'s' if images != 1 else ''} in your message."
    return _fill(head, rng, index, seed, fillers)


def tool_result_text(
    results: list[tuple[str, str]], seed: int, index: int = 0, fillers: tuple[str, ...] = _FILLERS
) -> str:
    """Answer after tool results: ``results`` is ``[(tool name, tool output), ...]``."""
    rng = random.Random(seed * 131 + index)
    said = "; ".join(f'the {name} tool returned "{_clip(out, 30)}"' for name, out in results)
    head = said[:1].upper() + said[1:] + "." if said else "The tool returned nothing."
    return _fill(head, rng, index, seed, fillers)


def json_object_text(user_text: str, seed: int, index: int = 0) -> str:
    """A JSON object (compact, as the real API writes it) for ``response_format: json_object``."""
    reply = reply_text(user_text, seed, index)
    obj = {"reply": reply, "tokens": count_tokens(reply)}
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _logprob(rng: random.Random) -> float:
    value = -round(rng.random() ** 3 * 2.5, 6)
    return 0.0 if value == 0 else value


def token_logprobs(tokens: list[str], seed: int, top_n: int) -> list[dict[str, Any]]:
    """``ChatCompletionTokenLogprob`` entries for ``tokens`` with ``top_n`` alternatives each."""
    out: list[dict[str, Any]] = []
    for pos, tok in enumerate(tokens):
        rng = random.Random(seed * 7919 + pos)
        lp = _logprob(rng)
        top: list[dict[str, Any]] = []
        if top_n > 0:
            top.append({"token": tok, "logprob": lp, "bytes": list(tok.encode())})
            alts = [a for a in _ALTERNATIVES if a != tok]
            rng.shuffle(alts)
            cur = lp
            for alt in alts[: top_n - 1]:
                cur = round(cur - rng.uniform(0.25, 2.5), 6)
                top.append({"token": alt, "logprob": cur, "bytes": list(alt.encode())})
        out.append({"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": top})
    return out


def message_text(msg: dict[str, Any]) -> str:
    """The text of a message's content (string or text/refusal parts)."""
    content = msg.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict)
        )
    return ""


def count_prompt_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> int:
    """Chat-format accounting: 3 tokens per message + content + name, 3 for the reply primer."""
    total = 3
    for msg in messages:
        total += 3 + count_tokens(message_text(msg))
        if isinstance(msg.get("name"), str):
            total += 1 + count_tokens(msg["name"])
        if isinstance(msg.get("content"), list):
            total += 85 * sum(
                1 for p in msg["content"] if isinstance(p, dict) and p.get("type") == "image_url"
            )
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") or {}
            total += (
                3
                + count_tokens(str(fn.get("name", "")))
                + count_tokens(str(fn.get("arguments", "")))
            )
    for tool in tools:
        fn = tool.get("function") or {}
        total += (
            8 + count_tokens(str(fn.get("name", ""))) + count_tokens(str(fn.get("description", "")))
        )
        total += count_tokens(json.dumps(fn.get("parameters") or {}))
    return total


# --------------------------------------------------------------------------------------------
# reply planning
# --------------------------------------------------------------------------------------------


def rand_id(n: int) -> str:
    return "".join(sysrand.choices(_ALNUM, k=n))


@dataclass
class ChoicePlan:
    index: int
    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    tokens: list[str]
    reasoning_tokens: int
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None


def _last_user(messages: list[dict[str, Any]]) -> tuple[str, int]:
    for msg in reversed(messages):
        if msg.get("role") == "user":
            content = msg.get("content")
            images = 0
            if isinstance(content, list):
                images = sum(1 for p in content if p.get("type") == "image_url")
            return message_text(msg), images
    return "", 0


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The raw text of the last user message (where ``[sandbox:...]`` directives live)."""
    return _last_user(messages)[0]


def check_context(params: ChatParams) -> None:
    """Count prompt tokens into ``params``; too many for the model -> context_length_exceeded."""
    params.prompt_tokens = count_prompt_tokens(params.messages, params.tools)
    if params.prompt_tokens > params.spec.context_window:
        raise ApiError(
            400,
            f"This model's maximum context length is {params.spec.context_window} tokens. "
            f"However, your messages resulted in {params.prompt_tokens} tokens. Please reduce the "
            "length of the messages.",
            param="messages",
            code="context_length_exceeded",
        )


def _tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, str]] | None:
    if messages[-1].get("role") != "tool":
        return None
    start = len(messages)
    while start > 0 and messages[start - 1].get("role") == "tool":
        start -= 1
    names: dict[str, str] = {}
    if start > 0:
        for call in messages[start - 1].get("tool_calls") or []:
            names[str(call.get("id"))] = str((call.get("function") or {}).get("name", "tool"))
    return [
        (names.get(str(m.get("tool_call_id")), "tool"), message_text(m)) for m in messages[start:]
    ]


def _mentions(text: str, name: str) -> bool:
    lower = text.lower()
    variants = {name.lower(), name.lower().replace("_", " ").replace("-", " ")}
    return any(re.search(rf"(?<!\w){re.escape(v)}(?!\w)", lower) for v in variants)


def _tools_to_call(params: ChatParams, user_text: str) -> list[dict[str, Any]]:
    choice = params.tool_choice
    if not params.tools or choice == "none":
        return []
    by_name = {t["function"]["name"]: t for t in params.tools}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return [by_name[choice["function"]["name"]]]
    allowed, mode = params.tools, choice
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        spec = choice.get("allowed_tools") or {}
        names = {(t.get("function") or {}).get("name") for t in spec.get("tools") or []}
        allowed = [t for t in params.tools if t["function"]["name"] in names]
        mode = spec.get("mode", "auto")
    chosen = [t for t in allowed if _mentions(user_text, t["function"]["name"])]
    if mode == "required" and not chosen:
        chosen = allowed[:1]
    return chosen if params.parallel_tool_calls else chosen[:1]


def _gen(schema: Any, rng: random.Random, hints: list[str], what: str, param: str) -> str:
    try:
        value = generate(schema, rng, hints)
    except (KeyError, IndexError, ValueError, TypeError, RecursionError) as exc:
        raise ApiError(400, f"Invalid schema for {what}: {exc}", param=param) from exc
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    hits = [text.find(s) for s in stops if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def plan(params: ChatParams, body: dict[str, Any]) -> list[ChoicePlan]:
    """Decide every choice's content / tool calls / finish reason / token counts."""
    seed = stable_seed(
        params.model, params.messages, params.tools, params.response_format, body.get("seed")
    )
    raw_user, images = _last_user(params.messages)
    user_text = strip_directives(raw_user)
    results = _tool_results(params.messages)
    calls = [] if results is not None else _tools_to_call(params, user_text)
    hint_text = user_text
    for tool in calls:
        hint_text = re.sub(re.escape(tool["function"]["name"]), " ", hint_text, flags=re.I)
    hints = hint_words(hint_text)
    plans: list[ChoicePlan] = []
    for i in range(params.n):
        reasoning = EFFORT_REASONING_TOKENS[params.effort]
        budget = params.budget
        if budget is not None and reasoning >= budget:
            plans.append(ChoicePlan(i, "", [], "length", [], budget, budget, None))
            continue
        visible = None if budget is None else budget - reasoning
        rng = random.Random(seed + i)
        if calls:
            tool_calls, used, finish = [], 0, "tool_calls"
            for k, tool in enumerate(calls):
                fn = tool["function"]
                schema = fn.get("parameters") or {"type": "object", "properties": {}}
                what, param = f"function '{fn['name']}'", "tools"
                args = _gen(schema, rng, hints, what, param)
                overhead = 3 + count_tokens(fn["name"])
                cost = overhead + count_tokens(args)
                if visible is not None and used + cost > visible:
                    keep = max(0, visible - used - overhead)
                    args = "".join(tokenize(args)[:keep])
                    cost, finish = visible - used, "length"
                call_id = "call_" + rand_id(24)
                fn_out = {"name": fn["name"], "arguments": args}
                tool_calls.append({"id": call_id, "type": "function", "function": fn_out})
                used += cost
                if finish == "length" or k == len(calls) - 1:
                    break
            plans.append(
                ChoicePlan(i, None, tool_calls, finish, [], reasoning, reasoning + used, None)
            )
            continue
        fmt = params.response_format or {}
        if fmt.get("type") == "json_schema":
            js = fmt["json_schema"]
            schema = js.get("schema") or {"type": "object"}
            what = f"response_format '{js['name']}'"
            text = _gen(schema, rng, hints, what, "response_format")
        elif fmt.get("type") == "json_object":
            text = json_object_text(user_text, seed, i)
        elif results is not None:
            text = tool_result_text(results, seed, i)
        else:
            text = reply_text(user_text, seed, i, images)
        text, _ = _cut_at_stop(text, params.stop)
        tokens = tokenize(text)
        finish = "stop"
        if visible is not None and len(tokens) > visible:
            tokens, finish = tokens[:visible], "length"
        lps = token_logprobs(tokens, seed + i, params.top_logprobs) if params.logprobs else None
        content = "".join(tokens)
        plans.append(
            ChoicePlan(i, content, [], finish, tokens, reasoning, reasoning + len(tokens), lps)
        )
    return plans


def usage(params: ChatParams, plans: list[ChoicePlan]) -> dict[str, Any]:
    completion = sum(p.completion_tokens for p in plans)
    return {
        "prompt_tokens": params.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": params.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": sum(p.reasoning_tokens for p in plans),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion_body(
    params: ChatParams, plans: list[ChoicePlan], cid: str, created: int
) -> dict[str, Any]:
    choices = []
    for p in plans:
        message: dict[str, Any] = {"role": "assistant", "content": p.content}
        if p.tool_calls:
            message["tool_calls"] = p.tool_calls
        message["refusal"] = None
        message["annotations"] = []
        logprobs = None
        if params.logprobs:
            logprobs = {"content": p.logprobs, "refusal": None}
        choices.append(
            {
                "index": p.index,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": p.finish_reason,
            }
        )
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": params.spec.snapshot or params.model,
        "choices": choices,
        "usage": usage(params, plans),
        "service_tier": params.service_tier,
        "system_fingerprint": params.spec.system_fingerprint,
    }


def _choice_chunks(params: ChatParams, p: ChoicePlan) -> list[dict[str, Any]]:
    """One choice's deltas (without its finish chunk)."""
    with_lp = params.spec.stream_logprobs_key or params.logprobs

    def choice(delta: dict[str, Any], lp: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {"index": p.index, "delta": delta}
        if with_lp:
            out["logprobs"] = lp
        out["finish_reason"] = None
        return out

    if not p.tool_calls:
        events = [choice({"role": "assistant", "content": "", "refusal": None})]
        for k, tok in enumerate(p.tokens):
            lp = None
            if params.logprobs and p.logprobs is not None:
                lp = {"content": [p.logprobs[k]], "refusal": None}
            events.append(choice({"content": tok}, lp))
        return events

    def start(k: int, call: dict[str, Any]) -> dict[str, Any]:
        fn = {"name": call["function"]["name"], "arguments": ""}
        return {"index": k, "id": call["id"], "type": "function", "function": fn}

    single = len(p.tool_calls) == 1
    if single:  # the first call rides in the role chunk (recorded single-call streams)
        first = {"role": "assistant", "content": None, "tool_calls": [start(0, p.tool_calls[0])]}
        events = [choice({**first, "refusal": None})]
    else:  # parallel calls: bare role chunk, then one start chunk per call
        events = [choice({"role": "assistant", "content": None})]
    for k, call in enumerate(p.tool_calls):
        if not (single and k == 0):
            events.append(choice({"tool_calls": [start(k, call)]}))
        for frag in tokenize(call["function"]["arguments"]):
            events.append(choice({"tool_calls": [{"index": k, "function": {"arguments": frag}}]}))
    return events


def stream_chunks(
    params: ChatParams, plans: list[ChoicePlan], cid: str, created: int
) -> list[dict[str, Any]]:
    """All chunks of a stream (without obfuscation, added per frame, and without ``[DONE]``)."""
    base = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": params.spec.snapshot or params.model,
        "service_tier": params.service_tier,
        "system_fingerprint": params.spec.system_fingerprint,
    }
    queues = [_choice_chunks(params, p) for p in plans]
    ordered: list[dict[str, Any]] = []
    if len(queues) == 1:
        ordered = queues[0]
    else:  # interleave like recorded n>1 streams: role+first delta per choice, then round robin
        for q in queues:
            ordered.extend(q[:2])
            del q[:2]
        while any(queues):
            for q in queues:
                if q:
                    ordered.append(q.pop(0))
    with_lp = params.spec.stream_logprobs_key or params.logprobs
    for p in plans:
        fin: dict[str, Any] = {"index": p.index, "delta": {}}
        if with_lp:
            fin["logprobs"] = None
        fin["finish_reason"] = p.finish_reason
        ordered.append(fin)
    chunks = []
    for c in ordered:
        chunk = {**base, "choices": [c]}
        if params.include_usage:
            chunk["usage"] = None
        chunks.append(chunk)
    if params.include_usage:
        chunks.append({**base, "choices": [], "usage": usage(params, plans)})
    return chunks
