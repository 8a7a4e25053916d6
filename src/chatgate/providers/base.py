"""What every provider module implements, and the model-profile rules they all apply.

A provider is pure: it turns a validated :class:`ChatRequest` into an :class:`UpstreamRequest`,
and upstream bytes back into OpenAI-shaped bytes. No network, database or clock.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
from msgspec import Struct

from ..config import Deployment, Profile, Provider
from ..errors import GatewayError, InvalidRequest
from ..schema import ChatRequest, Usage


class UpstreamRequest(Struct):
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool


class Context(Struct):
    """Per-request facts a translator needs to shape the answer."""

    response_id: str  # chatcmpl-...
    created: int
    public_model: str  # the name the client asked for
    include_usage: bool  # the client asked for the usage chunk
    dropped: list[str] = msgspec.field(default_factory=list)
    json_tool: bool = False  # JSON output is served by a forced tool (Anthropic fallback)
    json_tool_wrapped: bool = False  # ...whose input wraps a non-object answer in "value"
    stop: list[str] | None = None  # stop sequences the gateway applies itself
    max_output: int | None = None  # the output allowance the upstream request carries
    choice_index: int = 0  # fan-out: which choice this upstream call produces
    usage_chunk: bool = True  # fan-out: the merged stream sends one usage chunk itself


class StreamTranslator(Protocol):
    usage: Usage | None
    finish_reason: str | None
    done: bool

    def feed(self, data: bytes) -> bytes:
        """One upstream SSE data payload -> zero or more client SSE frames (bytes)."""
        ...

    def close(self) -> bytes:
        """The upstream body ended: final frames, or StreamInterrupted if it ended early."""
        ...

    def partial_usage(self) -> Usage | None:
        """What the upstream reported of its usage so far (for a stream cut short)."""
        ...


class ProviderModule(Protocol):
    NATIVE_N: bool  # the protocol returns n choices itself; else the gateway fans out
    MIN_OUTPUT: int  # the smallest output allowance the protocol accepts
    UNSUPPORTED: tuple[str, ...]  # OpenAI parameters the protocol has no equivalent for

    def build_request(
        self, req: ChatRequest, dep: Deployment, provider: Provider, ctx: Context, profile: Profile
    ) -> UpstreamRequest: ...

    def parse_response(self, body: bytes, ctx: Context) -> tuple[bytes, Usage | None]: ...

    def parse_error(
        self, status: int, headers: dict[str, str], body: bytes, secret: str | None
    ) -> GatewayError: ...

    def stream_translator(self, ctx: Context) -> StreamTranslator: ...


# --- model profiles --------------------------------------------------------------------


def _reject_or_drop(
    param: str, message: str, code: str, drop: bool, changes: dict[str, Any], dropped: list[str]
) -> None:
    if drop:
        changes[param] = None
        dropped.append(param)
        return
    raise InvalidRequest(message, param=param, code=code)


def _neutral(v: Any) -> bool:
    """A value that asks for nothing (null, false, 0, empty): safe to drop silently."""
    return v is None or v is False or (not isinstance(v, bool) and v in (0, {}, [], ""))


def apply_profile(
    req: ChatRequest,
    dep: Deployment,
    profile: Profile,
    public_model: str,
    protocol_unsupported: tuple[str, ...] = (),
    min_output: int = 1,
) -> tuple[ChatRequest, list[str]]:
    """Apply deployment defaults, the upstream protocol's and the model's limits.

    Returns the request to translate and the parameters dropped (only when the deployment
    allows dropping); raises InvalidRequest naming the parameter otherwise. Parameters the
    upstream cannot take but whose value asks for nothing (0, false, empty) are removed
    silently.
    """
    changes: dict[str, Any] = {}
    for k, v in dep.params.items():
        if getattr(req, k) is None:
            changes[k] = v
    if changes:
        req = msgspec.structs.replace(req, **changes)
        changes = {}
    dropped: list[str] = []
    drop = dep.drop_unsupported_params
    what = f"model '{public_model}'"

    ceiling = profile.max_output_tokens
    for p in ("max_tokens", "max_completion_tokens"):
        v = getattr(req, p)
        if v is not None and v < min_output:
            raise InvalidRequest(
                f"Invalid '{p}': {v} is below the minimum of {min_output} output tokens "
                f"that {what} takes.",
                param=p,
                code="integer_below_min_value",
            )
    if ceiling is not None:
        for p in ("max_tokens", "max_completion_tokens"):
            v = getattr(req, p)
            if v is not None and v > ceiling:
                raise InvalidRequest(
                    f"Invalid '{p}': {v} is greater than the maximum of {ceiling} output "
                    f"tokens of {what}.",
                    param=p,
                    code="integer_above_max_value",
                )

    for p in (*protocol_unsupported, *profile.unsupported):
        v = getattr(req, p)
        if v is None:
            continue
        if _neutral(v):
            changes[p] = None
        else:
            _reject_or_drop(
                p,
                f"Unsupported parameter: '{p}' is not supported with {what}.",
                "unsupported_parameter",
                drop,
                changes,
                dropped,
            )

    for p, (lo, hi) in profile.ranges.items():
        v = getattr(req, p)
        if v is not None and not lo <= v <= hi:
            _reject_or_drop(
                p,
                f"Unsupported value: '{p}' must be between {lo:g} and {hi:g} with {what}, got {v}.",
                "unsupported_value",
                drop,
                changes,
                dropped,
            )

    for group in profile.exclusive:
        present = [p for p in group if getattr(req, p) is not None and p not in changes]
        if len(present) > 1:
            first, *rest = present
            for p in rest:
                _reject_or_drop(
                    p,
                    f"'{first}' and '{p}' cannot both be specified for {what}. "
                    "Please use only one.",
                    "unsupported_parameter",
                    drop,
                    changes,
                    dropped,
                )

    r = profile.reasoning
    if r is not None:
        effort = req.reasoning_effort
        if effort is not None and effort not in r.efforts:
            raise InvalidRequest(
                f"Unsupported value: 'reasoning_effort' does not support '{effort}' with "
                f"{what}. Supported values are: {', '.join(r.efforts)}.",
                param="reasoning_effort",
                code="unsupported_value",
            )
        if (effort or r.default) != "none":
            for p in r.sampling_only_without:
                v = getattr(req, p)
                if v is None or v is False or v == profile.defaults.get(p, object()):
                    continue
                _reject_or_drop(
                    p,
                    f"Unsupported value: '{p}' does not support {_show(v)} with {what} at "
                    f"reasoning effort '{effort or r.default}'. Only the default value is "
                    "supported; set reasoning_effort to 'none' to use it.",
                    "unsupported_value",
                    drop,
                    changes,
                    dropped,
                )

    for src, dst in profile.renames.items():
        v = changes.get(src, getattr(req, src))
        if v is not None:
            changes[src] = None
            changes[dst] = v
    if changes:
        req = msgspec.structs.replace(req, **changes)
    return req, dropped


def _show(v: Any) -> str:
    return "true" if v is True else str(v)


# --- stop sequences the upstream cannot take ------------------------------------------


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text up to (not including) the first stop sequence, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class StopScanner:
    """Applies stop sequences to streamed text: holds back a tail that could be the start
    of a stop sequence, releases it once it cannot be, and reports the hit."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = stops
        self._keep = max(len(s) for s in stops) - 1
        self._held = ""
        self.hit = False

    def push(self, text: str) -> str:
        if self.hit:
            return ""
        buf = self._held + text
        out, self.hit = cut_at_stop(buf, self._stops)
        if self.hit:
            self._held = ""
            return out
        # keep the longest tail that is a prefix of some stop sequence
        keep = 0
        for n in range(min(self._keep, len(buf)), 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) for s in self._stops):
                keep = n
                break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        out, self._held = self._held, ""
        return "" if self.hit else out
