"""POST /chat/completions: authenticate, validate, plan, admit, attempt (with retries and
fallbacks), relay, settle, record."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from typing import TYPE_CHECKING

import msgspec

from ..config import RetrySettings
from ..errors import GatewayError, InvalidRequest, ModelNotFound, PermissionDenied, UpstreamError
from ..limits import Admission, Policy
from ..observe.logs import wants_prompts
from ..pricing import usd
from ..providers.base import Context, apply_profile
from ..router import context_exceeded, retryable
from ..schema import ChatRequest, Usage, decode_request
from ..store import KeyRecord, UsageRow
from .http import (
    ClientGone,
    DisconnectWatch,
    Receive,
    Scope,
    Send,
    check_json_content_type,
    header,
    read_body,
    send_error,
)
from .relay import Plan, json_attempt, stream_attempt

if TYPE_CHECKING:
    from ..app import Gateway
    from ..router import Target

log = logging.getLogger("chatgate.chat")
_perf = time.perf_counter
# A request id is the time in milliseconds (11 hex digits) then 52 random bits: ids sort by
# time, so each new usage row lands at the end of the primary key's B-tree. With wholly
# random ids every insert touched a random page of an index that outgrows the cache: the
# writer's cost per row went from 15 to 32 us over the first 400,000 rows, and kept growing.
# The random part comes from the Mersenne Twister (seeded from os.urandom, reseeded after a
# fork), not a system call per request: the ids are unique labels, not secrets.
_getrandbits = random.getrandbits
_time_ns = time.time_ns


def new_request_id() -> str:
    return f"chatcmpl-{_time_ns() // 1_000_000:011x}{_getrandbits(52):013x}"


_CLIENT_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")

UNLIMITED = Policy()
DEFAULT_MAX_OUTPUT = 32_768  # reserved for a model with no known output ceiling
IMAGE_TOKENS = 2_000  # a bound on what one image costs in prompt tokens


class Record:
    """The facts gathered for one request's usage row."""

    __slots__ = (
        "admission",
        "attempts",
        "calls",
        "committed",
        "cost",
        "deployment",
        "error_type",
        "frames",
        "key_id",
        "model",
        "owner",
        "prompt",
        "provider",
        "requested",
        "status",
        "stream",
        "stream_error",
        "ttft",
        "upstream_model",
        "upstream_request_id",
        "usage",
    )

    def __init__(self) -> None:
        self.key_id: str | None = None
        self.model: str | None = None
        self.provider: str | None = None
        self.upstream_model: str | None = None
        self.stream = False
        self.status = 500
        self.error_type: str | None = None
        self.ttft: float | None = None
        self.usage: Usage | None = None
        self.upstream_request_id: str | None = None
        self.owner: str | None = None
        self.admission: Admission | None = None
        self.cost: int | None = None  # micro-USD
        self.frames = 0  # stream frames sent to the client
        self.calls = 1  # upstream calls of the answering attempt (n fan-out)
        self.committed = False  # response headers sent: no more failover
        self.stream_error: GatewayError | None = None
        self.attempts = 0  # upstream attempts made for this request
        self.requested: str | None = None  # the model the client asked for
        self.deployment: str | None = None  # the deployment of the last attempt
        self.prompt: bytes | None = None  # the body, for a key that logs its prompts


async def handle_chat(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    t0 = _perf()
    created = int(time.time())
    rid = new_request_id()
    rec = Record()
    client_id = header(scope, b"x-request-id")
    echo = client_id if client_id and _CLIENT_ID.match(client_id) else rid.encode()
    base_headers = [(b"x-request-id", echo)]
    task = asyncio.current_task()
    assert task is not None
    watcher: DisconnectWatch | None = None
    trace = gw.obs.begin(scope, rec)
    try:
        client = scope.get("client")
        key = await gw.auth.authenticate(
            header(scope, b"authorization"), client[0] if client else ""
        )
        rec.key_id = key.id
        rec.owner = key.owner
        check_json_content_type(scope)
        body = await read_body(scope, receive, gw.cfg.max_body_bytes)
        if key.metadata is not None and wants_prompts(key.metadata):
            rec.prompt = body  # this key asked for its prompts to be logged
        req = decode_request(body)
        rec.model = rec.requested = req.model
        rec.stream = bool(req.stream)
        extra = [*(req.models or ()), *(req.fallbacks or ())]
        if extra:
            req = msgspec.structs.replace(req, models=None, fallbacks=None)
        _resolve(gw, key, req.model)
        chain = [m for m in gw.router.chain(req.model, extra) if key.allows(m)]
        plans = _plan(gw, req, chain, rid, created)
        policy = key.policy()
        if policy != UNLIMITED:
            rec.admission = await _admit(gw, key.id, policy, plans, body)
            base_headers.extend((k.encode(), v.encode()) for k, v in rec.admission.headers.items())
        watcher = DisconnectWatch(scope, receive, task)
        await _attempts(gw, req, plans, chain, rec, send, base_headers, t0, watcher)
    except GatewayError as err:
        rec.status = err.status
        rec.error_type = err.code or err.type
        if err.status >= 500 and err.code != "limits_unavailable":  # (Redis: logged once)
            log.warning("%s %s: %s (%s)", rid, rec.model, err.code, err.message)
        if watcher is not None:
            watcher.cancel()
        if rec.attempts:
            base_headers.append((b"x-chatgate-attempts", str(rec.attempts).encode()))
        await send_error(send, err, base_headers)
    except (asyncio.CancelledError, ClientGone, OSError):
        # The client went away (the watcher cancelled us): record it, answer nothing.
        if task.cancelling():
            task.uncancel()
        rec.status = 499
        rec.error_type = "client_disconnected"
    except Exception:
        log.exception("%s: unexpected error", rid)
        rec.status = 500
        rec.error_type = "internal_error"
        if watcher is not None:
            watcher.cancel()
        await send_error(
            send,
            GatewayError("The gateway hit an internal error; the request id is in the logs."),
            base_headers,
        )
    finally:
        if watcher is not None:
            watcher.cancel()
        await _settle(gw, rec)
        gw.obs.end(_record(gw, rid, rec, t0), rec, trace)


# --- planning ----------------------------------------------------------------------------


def _translate(gw: Gateway, t: Target, req: ChatRequest, rid: str, created: int) -> Plan:
    module = t.module
    r, dropped = apply_profile(
        req, t.deployment, t.profile, t.public_model, module.UNSUPPORTED, module.MIN_OUTPUT
    )
    n = r.n or 1
    fan_out = n > 1 and not module.NATIVE_N
    if fan_out:
        r = msgspec.structs.replace(r, n=None)
    ctx = Context(
        response_id=rid,
        created=created,
        public_model=t.public_model,  # a fallback answers under its own name
        include_usage=bool(r.stream_options and r.stream_options.include_usage),
        dropped=dropped,
    )
    ureq = module.build_request(r, t.deployment, t.provider, ctx, t.profile)
    return Plan(target=t, ctx=ctx, ureq=ureq, calls=n if fan_out else 1, n=n)


def _plan(
    gw: Gateway, req: ChatRequest, chain: list[str], rid: str, created: int
) -> dict[str, Plan]:
    """The request translated for every deployment that may serve it. A request the primary
    model cannot take is the client's error (400); a fallback that cannot take it is skipped."""
    plans: dict[str, Plan] = {}
    for model in chain:
        for t in gw.router.routes.get(model, ()):
            try:
                plans[t.name] = _translate(gw, t, req, rid, created)
            except InvalidRequest:
                if model == req.model:
                    raise
    return plans


async def _admit(
    gw: Gateway, key_id: str, policy: Policy, plans: dict[str, Plan], body: bytes
) -> Admission:
    """Reserve the request's worst case over every deployment that may serve it: an upper
    bound on its prompt (every byte of the request could be a token; images at a fixed
    bound) and its whole output allowance."""
    images = IMAGE_TOKENS * (body.count(b'"image_url"') + body.count(b'"file"'))
    tokens = micros = 0
    for p in plans.values():
        prompt = len(p.ureq.body) + images
        max_out = p.ctx.max_output or p.target.profile.max_output_tokens or DEFAULT_MAX_OUTPUT
        tokens = max(tokens, prompt * p.calls + max_out * p.n)
        if policy.budget_micros is not None:
            worst = gw.prices.worst_case_micros(
                p.target.deployment.model, prompt * p.calls, max_out * p.n
            )
            if worst is None:
                raise PermissionDenied(
                    f"This key has a budget, and model '{p.target.public_model}' has no price "
                    "configured, so its cost cannot be bounded.",
                    param="model",
                    code="price_unknown",
                )
            micros = max(micros, worst)
    try:
        return await gw.limiter.admit(key_id, policy, tokens, micros)
    except GatewayError as refused:
        gw.obs.metrics.refused("key", refused)
        raise


# --- attempts ----------------------------------------------------------------------------


async def _attempts(
    gw: Gateway,
    req: ChatRequest,
    plans: dict[str, Plan],
    chain: list[str],
    rec: Record,
    send: Send,
    headers: list[tuple[bytes, bytes]],
    t0: float,
    watcher: DisconnectWatch,
) -> None:
    """Try deployments until one answers: first every untried healthy deployment (priority
    groups, then fallback models), then, after a jittered backoff that honours retry-after
    up to a cap, again; within max_attempts and the request's deadline."""
    retry = gw.cfg.retry
    router = gw.router
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry.deadline
    tracer = gw.obs.tracer
    attempts = 0
    tried: set[str] = set()
    last: GatewayError | None = None
    round_no = 0
    while True:
        progressed = False
        for model in chain:
            for t in router.candidates(model, tried if round_no == 0 else set()):
                plan = plans.get(t.name)
                if plan is None:
                    router.release(t)
                    continue
                if attempts >= retry.max_attempts or loop.time() >= deadline:
                    router.release(t)
                    break
                attempts += 1
                rec.attempts = attempts
                progressed = True
                tried.add(t.name)
                one = _one(gw, plan, rec, send, headers, t0, watcher, attempts)
                err = await (one if tracer is None else tracer.attempt(one, t, attempts))
                if err is None:
                    return
                last = err
                if not retryable(err):
                    if context_exceeded(err):
                        extra = router.context_fallbacks(model, chain)
                        if extra:
                            chain.extend(extra)
                            plans.update(
                                _plan(gw, req, extra, plan.ctx.response_id, plan.ctx.created)
                            )
                            continue
                    raise err
        if attempts >= retry.max_attempts:
            break
        if progressed:
            wait = _backoff(retry, round_no, last)
        else:  # everything is cooling or open: wait for the first to come back, if soon
            soonest = router.soonest(chain)
            if soonest is None or soonest > retry.retry_after_cap:
                break
            wait = max(soonest, 0.05)  # (a half-open probe in flight: look again shortly)
        if loop.time() + wait >= deadline:
            break
        await asyncio.sleep(wait)
        round_no += 1
    if last is not None:
        raise last
    raise UpstreamError(
        f"No deployment of '{req.model}' can take requests right now (all cooling down or "
        "with open circuits); try again shortly.",
        status=503,
        code="no_healthy_deployment",
        headers={"retry-after": "1"},
    )


async def _one(
    gw: Gateway,
    plan: Plan,
    rec: Record,
    send: Send,
    headers: list[tuple[bytes, bytes]],
    t0: float,
    watcher: DisconnectWatch,
    attempt: int,
) -> GatewayError | None:
    """One attempt on one deployment; the error if it failed in a way worth reporting to
    the router (None: answered, or already reported in-band to the client)."""
    t = plan.target
    router = gw.router
    rec.provider = t.provider_name
    rec.deployment = t.name
    rec.upstream_model = t.deployment.model
    rec.model = plan.ctx.public_model
    rec.calls = plan.calls
    rec.usage = None
    meta = list(headers)
    if plan.ctx.dropped:
        meta.append((b"x-chatgate-dropped-params", ",".join(plan.ctx.dropped).encode()))
    meta.append((b"x-chatgate-attempts", str(attempt).encode()))
    if not gw.cfg.hide_provider:
        meta.append((b"x-chatgate-provider", t.provider_name.encode()))
    cap = router.capacity_policy(t)
    slot = None
    if cap is not None:
        tokens = len(plan.ureq.body) + (plan.ctx.max_output or 0) * plan.n
        try:
            slot = await router.capacity.admit(t.name, cap, tokens, 0)
        except GatewayError as full:  # this deployment's own ceiling: try another
            gw.obs.metrics.refused("deployment", full)
            router.release(t)
            return full
    router.begin(t)
    started = _perf()
    try:
        if plan.ureq.stream:
            await stream_attempt(gw, plan, rec, send, meta, t0, watcher)
            if rec.stream_error is not None:
                router.failure(t, rec.stream_error)
            else:
                router.success(t, rec.ttft)
            return None
        out = await json_attempt(gw, plan, rec)
    except GatewayError as err:
        router.failure(t, err)
        return err
    except BaseException:
        router.failure(t, None)  # abandoned by the client: no verdict on the deployment
        raise
    finally:
        if slot is not None:
            await router.capacity.settle(slot, rec.usage.total_tokens if rec.usage else 0, 0)
    router.success(t, _perf() - started)
    rec.status = 200
    if rec.usage is not None:
        rec.cost = gw.prices.cost_micros(t.deployment.model, rec.usage)
        if rec.cost is not None:
            meta.append((b"x-chatgate-cost-usd", usd(rec.cost).encode()))
    watcher.cancel()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(out)).encode()),
                *meta,
            ],
        }
    )
    await send({"type": "http.response.body", "body": out})
    return None


def _backoff(retry: RetrySettings, round_no: int, last: GatewayError | None) -> float:
    """Exponential backoff with full jitter; a retry-after within the cap is honoured."""
    wait = random.uniform(0, min(retry.backoff_cap, retry.backoff_base * 2**round_no))
    if last is not None:
        try:
            after = float(last.headers.get("retry-after") or 0)
        except ValueError:
            after = 0.0
        if 0 < after <= retry.retry_after_cap:
            wait = max(wait, after)
    return wait


# --- settlement and the usage row ----------------------------------------------------------


async def _settle(gw: Gateway, rec: Record) -> None:
    """Price what happened and release the reservation. A stream ended before any output
    is free; a partial one is charged from the upstream's own usage, or else from the
    deltas actually delivered (never from the reservation)."""
    usage = rec.usage
    if rec.upstream_model is not None and usage is not None:
        rec.cost = gw.prices.cost_micros(rec.upstream_model, usage)
    elif rec.upstream_model is not None and rec.stream and rec.status in (200, 499):
        rec.cost = 0
    if rec.stream and rec.error_type is not None and rec.frames <= rec.calls:
        rec.cost = 0  # the stream ended before any output (at most the role chunks)
    if rec.status >= 400 and not rec.committed:
        rec.cost = 0  # an error answer: the client got nothing to pay for
        rec.usage = None
    if rec.admission is not None:
        tokens = usage.total_tokens if usage is not None else 0
        await gw.limiter.settle(rec.admission, tokens, rec.cost or 0)


def _resolve(gw: Gateway, key: KeyRecord, model: str) -> None:
    if model not in gw.router.routes:
        if model in gw.router.unavailable:
            raise UpstreamError(
                f"Model '{model}' has no usable deployment: {gw.router.unavailable[model]}.",
                status=503,
                code="model_unavailable",
            )
        raise ModelNotFound(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
        )
    if not key.allows(model):
        raise PermissionDenied(
            f"This API key is not allowed to use the model `{model}`.", param="model"
        )


def _record(gw: Gateway, rid: str, rec: Record, t0: float) -> UsageRow:
    u = rec.usage
    row = UsageRow(
        request_id=rid,
        created=time.time(),
        key_id=rec.key_id,
        model=rec.model,
        provider=rec.provider,
        upstream_model=rec.upstream_model,
        stream=rec.stream,
        status=rec.status,
        error_type=rec.error_type,
        prompt_tokens=u.prompt_tokens if u else None,
        completion_tokens=u.completion_tokens if u else None,
        total_tokens=u.total_tokens if u else None,
        cached_tokens=u.cached_tokens if u else None,
        reasoning_tokens=u.reasoning_tokens if u else None,
        latency_ms=(_perf() - t0) * 1000.0,
        ttft_ms=rec.ttft * 1000.0 if rec.ttft is not None else None,
        upstream_request_id=rec.upstream_request_id,
        owner=rec.owner,
        cost_micros=rec.cost,
    )
    gw.writer.record(row)
    return row
