"""Admission and settlement: rate (rpm), tokens (tpm), concurrency and budget, per key.

One interface (:class:`Limiter`), two backends: :class:`MemoryLimiter` here (one process) and
:class:`chatgate.cluster.RedisLimiter` (replicas sharing Redis); both answer with the errors
and headers built here. A request is *admitted* before it goes upstream — its worst-case
cost is reserved against the key's budget — and *settled* when it ends, replacing the
reservation with the real cost. Because reservations count as spent until settled, concurrent
requests can never spend past the budget together.

Amounts are integer micro-USD; time comes from an injectable clock (tests move it).
"""

from __future__ import annotations

import calendar
import inspect
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from msgspec import Struct

from .errors import RateLimited

Period = Literal["total", "daily", "monthly"]
WINDOW = 60.0  # seconds: rpm and tpm are counted over a sliding minute


class Policy(Struct, frozen=True):
    """The limits of one caller (an API key or a JWT subject); None = unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    budget_micros: int | None = None
    budget_period: Period = "total"


class Admission(Struct):
    """What a request holds between admit and settle."""

    key_id: str
    tokens: int
    micros: int  # reserved against the budget
    period_start: float
    headers: dict[str, str]
    settled: bool = False
    lease: str = ""  # Redis backend: this request's id in the key's windows and leases
    local: bool = False  # Redis backend: admitted by the local fallback while Redis was down


class BudgetExceeded(RateLimited):
    code = "insufficient_quota"
    type = "insufficient_quota"


def period_start(period: Period, now: float) -> float:
    """Start of the budget period containing ``now``, at UTC boundaries."""
    if period == "total":
        return 0.0
    t = time.gmtime(now)
    if period == "daily":
        return float(calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)))
    return float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)))


def period_end(period: Period, now: float) -> float | None:
    if period == "total":
        return None
    t = time.gmtime(now)
    if period == "daily":
        return period_start("daily", now) + 86400.0
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


def go_duration(seconds: float) -> str:
    """OpenAI's reset format: 120ms, 1s, 6m0s."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    s = round(seconds)
    return f"{s // 60}m{s % 60}s" if s >= 60 else f"{s}s"


class Limiter(Protocol):
    async def admit(self, key_id: str, policy: Policy, tokens: int, micros: int) -> Admission: ...

    async def settle(self, adm: Admission, tokens: int, micros: int) -> None: ...

    async def spent(self, key_id: str, policy: Policy) -> int: ...


SpentLoader = Callable[[str, float], int]  # (key id, period start) -> micro-USD spent
AsyncSpentLoader = Callable[[str, float], Awaitable[int]]


# --- what both backends answer with --------------------------------------------------------


def _retry_after(wait: float) -> dict[str, str]:
    return {"retry-after": str(max(1, int(wait + 0.999)))}


def rpm_exceeded(policy: Policy, wait: float) -> RateLimited:
    return RateLimited(
        f"Rate limit reached: {policy.rpm} requests per minute for this key.",
        code="rate_limit_exceeded",
        type="requests",
        headers=_retry_after(wait),
    )


def tokens_never_fit(policy: Policy, tokens: int) -> RateLimited:
    return RateLimited(
        f"This request may use up to {tokens} tokens, more than this key's "
        f"limit of {policy.tpm} tokens per minute; lower max_tokens.",
        code="rate_limit_exceeded",
        type="tokens",
    )


def tpm_exceeded(policy: Policy, wait: float) -> RateLimited:
    return RateLimited(
        f"Rate limit reached: {policy.tpm} tokens per minute for this key.",
        code="rate_limit_exceeded",
        type="tokens",
        headers=_retry_after(wait),
    )


def concurrency_exceeded(policy: Policy) -> RateLimited:
    return RateLimited(
        f"Too many concurrent requests: this key allows {policy.max_concurrency}.",
        code="concurrency_limit_exceeded",
        type="requests",
        headers={"retry-after": "1"},
    )


def budget_exceeded(policy: Policy, micros: int, left: int, now: float) -> BudgetExceeded:
    end = period_end(policy.budget_period, now)
    headers = {"retry-after": str(int(end - now) + 1)} if end else {}
    return BudgetExceeded(
        f"This key's budget does not cover this request: it may cost up to "
        f"${micros / 1e6:.6f} and ${max(0, left) / 1e6:.6f} is left"
        + (f" until the {policy.budget_period} budget resets." if end else "."),
        headers=headers,
    )


def rate_headers(
    policy: Policy,
    requests: int,
    first_request: float,
    tokens: float,
    first_tokens: float | None,
    now: float,
) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers from the window as this admission leaves it: the
    requests and tokens it holds and when its oldest entry leaves."""
    h: dict[str, str] = {}
    if policy.rpm is not None:
        h["x-ratelimit-limit-requests"] = str(policy.rpm)
        h["x-ratelimit-remaining-requests"] = str(max(0, policy.rpm - requests))
        h["x-ratelimit-reset-requests"] = go_duration(first_request + WINDOW - now)
    if policy.tpm is not None:
        h["x-ratelimit-limit-tokens"] = str(policy.tpm)
        h["x-ratelimit-remaining-tokens"] = str(max(0, int(policy.tpm - tokens)))
        reset = first_tokens + WINDOW - now if first_tokens is not None else 0.0
        h["x-ratelimit-reset-tokens"] = go_duration(reset)
    return h


class _Window:
    """The last minute's entries (a time and an amount each), exact, in two flat arrays: 16
    bytes an entry where a deque of [time, amount] lists took about 130 (at 3,000 requests/s a
    key's windows held 40 MB; now 4 MB). Expired entries are skipped by a head index and
    compacted away every 4,096."""

    __slots__ = ("amounts", "head", "times", "total")

    def __init__(self) -> None:
        self.times = array("d")
        self.amounts = array("d")
        self.head = 0
        self.total = 0.0

    def __len__(self) -> int:
        return len(self.times) - self.head

    def first(self) -> float | None:
        return self.times[self.head] if len(self.times) > self.head else None

    def add(self, t: float, amount: float) -> None:
        self.times.append(t)
        self.amounts.append(amount)
        self.total += amount

    def expire(self, horizon: float) -> None:
        times, h, n = self.times, self.head, len(self.times)
        if h == n or times[h] > horizon:
            return
        amounts = self.amounts
        while h < n and times[h] <= horizon:
            self.total -= amounts[h]
            h += 1
        if h == n:  # all expired: start over
            del times[:], amounts[:]
            h = 0
            self.total = 0.0
        elif h >= 4096:
            # compact often: the arrays then stay at one window's size; compacting only at
            # half made the RSS a 5 MB sawtooth at 3,000 requests/s (a memmove of the live
            # entries every 4,096 expiries costs about 35 ns an entry)
            del times[:h], amounts[:h]
            h = 0
        self.head = h

    def wait_to_free(self, need: float, now: float) -> float:
        """Seconds until entries adding up to ``need`` have left the window."""
        freed, wait = 0.0, 0.0
        for i in range(self.head, len(self.times)):
            freed += self.amounts[i]
            wait = self.times[i] + WINDOW - now
            if freed >= need:
                break
        return wait

    def adjust(self, old: float, new: float) -> None:
        """Replace the newest entry of amount ``old`` by ``new`` (a settled estimate)."""
        amounts = self.amounts
        for i in range(len(amounts) - 1, self.head - 1, -1):
            if amounts[i] == old:
                amounts[i] = new
                self.total += new - old
                return


class _KeyState:
    __slots__ = ("active", "period", "requests", "reserved", "spent", "tokens")

    def __init__(self) -> None:
        self.requests = _Window()  # amounts unused (0)
        self.tokens = _Window()
        self.active = 0
        self.period: float | None = None
        self.spent = 0  # settled micro-USD in the current period
        self.reserved = 0  # micro-USD held by requests in flight


class MemoryLimiter:
    """Exact limits for one process. The settled spend of a period is loaded once from the
    usage rows (``load_spent``) so that a restart does not forget what was spent."""

    def __init__(
        self,
        load_spent: SpentLoader | AsyncSpentLoader,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._load = load_spent  # Store.spent_since is async; a plain function works too
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}

    async def _state(self, key_id: str, policy: Policy, now: float) -> _KeyState:
        st = self._keys.get(key_id)
        if st is None:
            st = self._keys[key_id] = _KeyState()
        if policy.budget_micros is not None:
            start = period_start(policy.budget_period, now)
            if st.period is None:  # first use in this process: what the usage rows say
                loaded = self._load(key_id, start)
                spent = await loaded if inspect.isawaitable(loaded) else loaded
                if st.period is None:  # unless a concurrent first use got there meanwhile
                    st.spent, st.period = spent, start
            if st.period != start:  # the period rolled over: a fresh budget
                st.spent = 0
            st.period = start
        return st

    def _expire(self, st: _KeyState, now: float) -> None:
        horizon = now - WINDOW
        st.requests.expire(horizon)
        st.tokens.expire(horizon)

    async def admit(self, key_id: str, policy: Policy, tokens: int, micros: int) -> Admission:
        now = self._clock()
        st = await self._state(key_id, policy, now)
        self._expire(st, now)
        if policy.rpm is not None and len(st.requests) >= policy.rpm:
            raise rpm_exceeded(policy, st.requests.times[st.requests.head] + WINDOW - now)
        if policy.tpm is not None:
            if tokens > policy.tpm:
                raise tokens_never_fit(policy, tokens)
            if st.tokens.total + tokens > policy.tpm:
                need = st.tokens.total + tokens - policy.tpm
                raise tpm_exceeded(policy, st.tokens.wait_to_free(need, now))
        if policy.max_concurrency is not None and st.active >= policy.max_concurrency:
            raise concurrency_exceeded(policy)
        if policy.budget_micros is not None:
            if st.spent + st.reserved + micros > policy.budget_micros:
                left = policy.budget_micros - st.spent - st.reserved
                raise budget_exceeded(policy, micros, left, now)
            st.reserved += micros
        st.requests.add(now, 0.0)
        if policy.tpm is not None:
            st.tokens.add(now, float(tokens))
        st.active += 1
        return Admission(
            key_id=key_id,
            tokens=tokens,
            micros=micros if policy.budget_micros is not None else 0,
            period_start=st.period or 0.0,
            headers=self._headers(st, policy, now),
        )

    def _headers(self, st: _KeyState, policy: Policy, now: float) -> dict[str, str]:
        first = st.requests.first()
        return rate_headers(
            policy,
            len(st.requests),
            now if first is None else first,
            st.tokens.total,
            st.tokens.first(),
            now,
        )

    async def settle(self, adm: Admission, tokens: int, micros: int) -> None:
        if adm.settled:
            return
        adm.settled = True
        st = self._keys.get(adm.key_id)
        if st is None:
            return
        st.active -= 1
        if adm.micros:
            st.reserved -= adm.micros
        if micros:
            # the cost lands in the period current at settlement, as the usage row does
            st.spent += micros
        if tokens != adm.tokens:
            st.tokens.adjust(float(adm.tokens), float(tokens))

    async def spent(self, key_id: str, policy: Policy) -> int:
        st = await self._state(key_id, policy, self._clock())
        return st.spent

    def forget_spent(self) -> None:
        """Re-read each key's settled spend from the usage rows at its next use (for the
        Redis backend's local fallback: what it read in an earlier outage is stale)."""
        for st in self._keys.values():
            st.period = None
