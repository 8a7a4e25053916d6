"""A fast fake vendor for benchmarks: OpenAI Chat, Anthropic Messages and Gemini shapes,
streaming and not, with pre-encoded answers so that it is never the bottleneck.

    python bench/fake_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys

import httptools
import uvloop

CHUNKS = 20
SLOW = 20.0  # seconds a "[slow]" stream takes
WORDS = [f" word{i}" for i in range(CHUNKS)]


def _sse(events: list[bytes]) -> bytes:
    return b"".join(events)


def _openai_stream(
    deltas: list[dict[str, object]], finish_reason: str, usage: dict[str, int]
) -> bytes:
    """An OpenAI chunk stream: one chunk per delta, the finish, the usage chunk, [DONE]."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1}
    head["model"] = "gpt-5.1"
    ev = [
        {**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}], "usage": None}
        for d in deltas
    ]
    ev.append(
        {
            **head,
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}],
            "usage": None,
        }
    )
    ev.append({**head, "choices": [], "usage": usage})
    return _sse([f"data: {json.dumps(e)}\n\n".encode() for e in ev] + [b"data: [DONE]\n\n"])


def _anthropic_stream(
    block: dict[str, object], deltas: list[dict[str, object]], stop_reason: str, prompt: int
) -> bytes:
    """An Anthropic event stream of one content block: ``deltas`` are its delta objects."""
    usage = {
        "input_tokens": prompt,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    ev: list[tuple[str, dict[str, object]]] = [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        ),
    ]
    ev += [
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
        for d in deltas
    ]
    ev += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": CHUNKS},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return _sse([f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in ev])


def _openai() -> tuple[bytes, bytes]:
    usage = {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS}
    body = json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-5.1",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(WORDS), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    ).encode()
    first = {"role": "assistant", "content": ""}
    stream = _openai_stream([first, *({"content": w} for w in WORDS)], "stop", usage)
    return body, stream


def _anthropic() -> tuple[bytes, bytes]:
    usage = {
        "input_tokens": 12,
        "output_tokens": CHUNKS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    body = json.dumps(
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [{"type": "text", "text": "".join(WORDS)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
    ).encode()
    deltas: list[dict[str, object]] = [{"type": "text_delta", "text": w} for w in WORDS]
    stream = _anthropic_stream({"type": "text", "text": ""}, deltas, "end_turn", 12)
    return body, stream


def _gemini() -> tuple[bytes, bytes]:
    def chunk(text: str, last: bool, n: int) -> dict[str, object]:
        cand: dict[str, object] = {
            "content": {"role": "model", "parts": [{"text": text}]},
            "index": 0,
        }
        if last:
            cand["finishReason"] = "STOP"
        return {
            "candidates": [cand],
            "usageMetadata": {
                "promptTokenCount": 12,
                "candidatesTokenCount": n,
                "totalTokenCount": 12 + n,
            },
            "modelVersion": "gemini-2.5-flash",
            "responseId": "bench",
        }

    body = json.dumps(chunk("".join(WORDS), True, CHUNKS)).encode()
    stream = _sse(
        [
            f"data: {json.dumps(chunk(w, i == CHUNKS - 1, i + 1))}\r\n\r\n".encode()
            for i, w in enumerate(WORDS)
        ]
    )
    return body, stream


# A tool-call stream: the arguments {"words": " word0 ... word19"} in 20 pieces (Gemini sends
# a call whole, in one chunk, as it does).
ARG_PIECES = ['{"words": "' + WORDS[0], *WORDS[1:-1], WORDS[-1] + '"}']
TOOL = "get_words"


def _openai_tool() -> bytes:
    call = {"index": 0, "id": "call_bench", "type": "function"}
    call["function"] = {"name": TOOL, "arguments": ""}
    first = {"role": "assistant", "content": None, "tool_calls": [call]}
    pieces = ({"tool_calls": [{"index": 0, "function": {"arguments": a}}]} for a in ARG_PIECES)
    usage = {"prompt_tokens": 30, "completion_tokens": CHUNKS, "total_tokens": 30 + CHUNKS}
    return _openai_stream([first, *pieces], "tool_calls", usage)


def _anthropic_tool() -> bytes:
    block = {"type": "tool_use", "id": "toolu_bench", "name": TOOL, "input": {}}
    deltas: list[dict[str, object]] = [
        {"type": "input_json_delta", "partial_json": a} for a in ARG_PIECES
    ]
    return _anthropic_stream(block, deltas, "tool_use", 30)


def _gemini_tool() -> bytes:
    chunk = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": TOOL, "args": {"words": "".join(WORDS)}}}],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 30,
            "candidatesTokenCount": CHUNKS,
            "totalTokenCount": 30 + CHUNKS,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "bench",
    }
    return f"data: {json.dumps(chunk)}\r\n\r\n".encode()


OPENAI, ANTHROPIC, GEMINI = _openai(), _anthropic(), _gemini()
TOOLS = {"openai": _openai_tool(), "anthropic": _anthropic_tool(), "gemini": _gemini_tool()}


class Handler(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, body = self.url, b"".join(self.body)
        self.url, self.body = b"", []
        assert self.transport is not None
        if b"/messages" in url:
            answer, proto = ANTHROPIC, "anthropic"
            stream = b'"stream":true' in body or b'"stream": true' in body
        elif b"generateContent" in url or b"GenerateContent" in url:
            answer, proto = GEMINI, "gemini"
            stream = b"streamGenerateContent" in url
        else:
            answer, proto = OPENAI, "openai"
            stream = b'"stream":true' in body or b'"stream": true' in body
        payload = answer[1] if stream else answer[0]
        if stream and b'"tools"' in body:  # the tool-call stream cells
            payload = TOOLS[proto]
        ctype = b"text/event-stream" if stream else b"application/json"
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: "
            + ctype
            + b"\r\ncontent-length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
        )
        if stream and b"[slow]" in body:  # memory runs: a stream that lasts SLOW seconds
            asyncio.get_running_loop().create_task(self._slow(head, payload))
            return
        self.transport.write(head + payload)

    async def _slow(self, head: bytes, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(head)
        events = [e for e in payload.split(b"\n\n") if e]
        pause = SLOW / len(events)
        for ev in events:
            if self.transport.is_closing():
                return
            self.transport.write(ev + b"\n\n")
            await asyncio.sleep(pause)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Handler, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
