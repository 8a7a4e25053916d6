"""Hypothesis strategies: random valid OpenAI chat requests (conversations with system
prompts, images, tool exchanges, sampling parameters, response formats)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

PNG = "data:image/png;base64,iVBORw0KGgo="

words = st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=30).filter(str.strip)
tool_names = st.sampled_from(["get_weather", "lookup", "add_numbers"])
TOOLS = {
    "get_weather": {"type": "object", "properties": {"city": {"type": "string"}},
                    "required": ["city"]},
    "lookup": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}},
    "add_numbers": {"type": "object", "properties": {"a": {"type": "number"},
                                                     "b": {"type": "number"}}},
}  # fmt: skip


@st.composite
def user_message(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return {"role": "user", "content": draw(words)}
    parts: list[dict[str, Any]] = [{"type": "text", "text": draw(words)}]
    if draw(st.booleans()):
        url = draw(st.sampled_from([PNG, "https://example.com/a.png"]))
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return {"role": "user", "content": parts}


@st.composite
def tool_exchange(draw: st.DrawFn, counter: list[int]) -> list[dict[str, Any]]:
    """An assistant turn with 1-3 tool calls and their tool results (maybe a user follow-up)."""
    calls = []
    for _ in range(draw(st.integers(1, 3))):
        counter[0] += 1
        name = draw(tool_names)
        calls.append(
            {
                "id": f"toolu_{counter[0]:04d}",
                "type": "function",
                "function": {"name": name, "arguments": '{"city": "x"}'},
            }
        )
    msg: dict[str, Any] = {"role": "assistant", "tool_calls": calls}
    if draw(st.booleans()):
        msg["content"] = draw(words)
    out = [msg]
    for c in calls:
        out.append({"role": "tool", "tool_call_id": c["id"], "content": draw(words)})
    return out


@st.composite
def conversation(draw: st.DrawFn) -> dict[str, Any]:
    counter = [0]
    msgs: list[dict[str, Any]] = []
    if draw(st.booleans()):
        msgs.append(
            {"role": draw(st.sampled_from(["system", "developer"])), "content": draw(words)}
        )
    msgs.append(draw(user_message()))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["user", "assistant", "tools", "system"]))
        if kind == "user":
            msgs.append(draw(user_message()))
        elif kind == "assistant":
            msgs.append({"role": "assistant", "content": draw(words)})
        elif kind == "system":
            msgs.append({"role": "system", "content": draw(words)})
        else:
            msgs.extend(draw(tool_exchange(counter)))
    if msgs[-1]["role"] == "assistant" and draw(st.booleans()):
        msgs.append(draw(user_message()))
    body: dict[str, Any] = {"model": "pub", "messages": msgs}
    used = {"get_weather", "lookup", "add_numbers"}
    if draw(st.booleans()) or any("tool_calls" in m for m in msgs):
        body["tools"] = [
            {"type": "function", "function": {"name": n, "parameters": TOOLS[n]}} for n in used
        ]
        body["tool_choice"] = draw(
            st.sampled_from(
                ["auto", "none", "required", {"type": "function", "function": {"name": "lookup"}}]
            )
        )
        if draw(st.booleans()):
            body["parallel_tool_calls"] = draw(st.booleans())
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 1))
    elif draw(st.booleans()):
        body["top_p"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        body[draw(st.sampled_from(["max_tokens", "max_completion_tokens"]))] = draw(
            st.integers(1, 60000)
        )
    if draw(st.booleans()):
        body["stop"] = draw(st.one_of(words, st.lists(words, min_size=1, max_size=4)))
    if draw(st.booleans()):
        body["reasoning_effort"] = draw(st.sampled_from(["none", "low", "medium", "high"]))
    if draw(st.booleans()):
        body["user"] = draw(words)
    if "tools" not in body and draw(st.booleans()):
        body["response_format"] = draw(
            st.sampled_from(
                [
                    {"type": "json_object"},
                    {"type": "text"},
                    {
                        "type": "json_schema",
                        "json_schema": {"name": "s", "schema": TOOLS["lookup"]},
                    },
                ]
            )
        )
    return body
