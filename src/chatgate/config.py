"""Configuration: one YAML file, ``${VAR}`` interpolated, validated on load into typed settings.

Errors name the bad key (``providers.openai.base_url: ...``) so an operator can fix the file
without reading code.
"""

from __future__ import annotations

import fnmatch
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml
from msgspec import Struct, field

from .pricing import Price, builtin_prices
from .schema import ChatRequest

Protocol = Literal["openai", "openai_responses", "anthropic", "gemini"]
PROTOCOLS: tuple[str, ...] = ("openai", "openai_responses", "anthropic", "gemini")
# Which provider protocols a deployment may switch to (same vendor, same credentials).
COMPATIBLE = {"openai": {"openai", "openai_responses"}, "openai_responses": {"openai"}}


class ConfigError(Exception):
    """The configuration is invalid; the message names the key."""


class _C(Struct, forbid_unknown_fields=True):
    pass


class Listen(_C):
    host: str = "127.0.0.1"
    port: int = 8080


class Timeouts(_C):
    connect: float = 10.0
    first_byte: float = 300.0  # reasoning models can think for minutes before the first byte
    idle: float = 120.0  # between two stream chunks
    total: float = 900.0


class Provider(_C):
    protocol: Protocol
    base_url: str
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_connections: int = 256


class Deployment(_C):
    provider: str
    model: str
    protocol: Protocol | None = None
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    drop_unsupported_params: bool = False
    # routing: the lowest priority group with a healthy deployment serves; weighted within
    name: str | None = None  # shown in /admin/deployments (default provider/model#i)
    weight: float = 1.0
    priority: int = 0
    rpm: int | None = None  # this deployment's own ceilings (the vendor account's limits)
    tpm: int | None = None
    timeouts: Timeouts | None = None  # overrides the provider's
    headers: dict[str, str] = field(default_factory=dict)


class Route(_C):
    """How a model's deployments are used (config key `routing.<model>`)."""

    strategy: Literal["weighted", "least-busy", "lowest-latency"] = "weighted"
    fallbacks: list[str] = field(default_factory=list)  # other models, tried in order
    context_fallbacks: list[str] = field(default_factory=list)  # on context-length errors


class RetrySettings(_C):
    max_attempts: int = 4  # upstream calls per request, across deployments and fallbacks
    backoff_base: float = 0.2  # seconds; doubled each retry of the same deployment, jittered
    backoff_cap: float = 2.0
    retry_after_cap: float = 10.0  # longest retry-after honoured before trying elsewhere
    deadline: float = 900.0  # total seconds a request may spend on attempts


class CircuitSettings(_C):
    failures: int = 5  # consecutive failures that open a deployment's circuit
    cooldown: float = 30.0  # seconds before one probe request may close it again


class Profile(_C):
    max_output_tokens: int | None = None
    default_max_tokens: int | None = None  # sent when the client gives none (Anthropic needs one)
    native_json_schema: bool = False  # Anthropic: output_config.format structured outputs
    prefill: bool = True  # Anthropic: may a conversation end with an assistant message
    # Gemini: reasoning_effort -> thinkingLevel (Gemini 3) or thinkingBudget (Gemini 2.5)
    thinking_levels: dict[str, str] | None = None
    thinking_budgets: dict[str, int] | None = None
    # Gemini 3: a turn's first function call must carry its thoughtSignature
    thought_signatures: bool = False
    renames: dict[str, str] = field(default_factory=dict)
    unsupported: list[str] = field(default_factory=list)
    ranges: dict[str, list[float]] = field(default_factory=dict)
    exclusive: list[list[str]] = field(default_factory=list)
    reasoning: Reasoning | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


class Reasoning(_C):
    efforts: list[str]
    default: str
    sampling_only_without: list[str] = field(default_factory=list)


class JWTSettings(_C):
    """Bearer JWTs: HS256 with a shared secret, and/or RS256/ES256 against a JWKS."""

    secret: str | None = None
    jwks: dict[str, Any] | None = None  # inline {"keys": [...]}
    jwks_file: str | None = None  # a JWKS document on disk (rotated by the operator)
    issuer: str | None = None
    audience: str | None = None
    leeway: float = 30.0  # seconds of clock skew allowed on exp/nbf


class UsageSettings(_C):
    flush_interval: float = 0.2  # seconds between batched writes
    batch_size: int = 500
    # rows held in memory; beyond that (or while the database fails) they go to the spool
    max_pending: int = 100_000
    spool_dir: str | None = None  # default: ./chatgate-spool (relative to the working dir)
    spool_max_mb: float = 512


class MetricsSettings(_C):
    """GET /metrics (Prometheus text format)."""

    enabled: bool = True
    public: bool = False  # true: no bearer needed (e.g. a port only Prometheus reaches)
    token: str | None = None  # a scrape-only bearer accepted besides the master key


class TracingSettings(_C):
    """OpenTelemetry traces, exported by OTLP/HTTP (needs the `otel` extra)."""

    otlp_endpoint: str  # the collector, e.g. http://otel-collector:4318 (/v1/traces added)
    service_name: str = "chatgate"
    sample_ratio: float = 1.0  # of new traces; a client's sampled flag is honoured
    headers: dict[str, str] = field(default_factory=dict)  # sent to the collector (auth)
    export_interval: float = 1.0  # seconds between batched exports


class Config(_C):
    listen: Listen = field(default_factory=Listen)
    database_url: str = "sqlite:///./chatgate.db"
    # run the schema migrations on start (false: refuse to start on an old schema, naming
    # `chatgate db upgrade`)
    auto_migrate: bool = True
    master_key: str | None = None
    providers: dict[str, Provider] = field(default_factory=dict)
    models: dict[str, list[Deployment]] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    # auto: providers without an api_key are served by the local sandbox emulators;
    # true: every provider is; false: never (such providers are disabled).
    sandbox: Literal["auto", True, False] = False
    max_body_bytes: int = 20 * 1024 * 1024
    key_cache_seconds: float = 2.0
    usage: UsageSettings = field(default_factory=UsageSettings)
    jwt: JWTSettings | None = None
    routing: dict[str, Route] = field(default_factory=dict)
    retry: RetrySettings = field(default_factory=RetrySettings)
    circuit: CircuitSettings = field(default_factory=CircuitSettings)
    hide_provider: bool = False  # no x-chatgate-provider/-deployment headers for clients
    # behind a load balancer: take the client address from X-Forwarded-For (127.0.0.1 only)
    proxy_headers: bool = False
    prices: dict[str, Price] = field(default_factory=dict)
    # failed authentications from one address within a minute before answers slow down
    auth_failures_per_minute: int = 20
    # cluster mode: rate limits, budgets, circuit state and key invalidation shared by every
    # replica through Redis (None: each process keeps its own)
    redis_url: str | None = None
    redis_prefix: str = "chatgate:"  # every Redis key and channel starts with it
    # Redis unreachable: "open" keeps serving with this replica's own limits; "closed" answers
    # 503 to requests whose key has a limit or budget
    redis_on_failure: Literal["open", "closed"] = "open"
    # a concurrency slot or budget reservation of a replica that died is freed after this long;
    # it must outlast the longest request (which is not refreshed)
    redis_lease_seconds: float = 960.0
    # SIGTERM/SIGINT: requests and streams in flight get this long to finish
    shutdown_grace_seconds: float = 30.0
    keep_alive_seconds: float = 5.0  # an idle client connection is closed after this long
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # text: lines for humans; json: one JSON object a line (the access log is JSON in both)
    log_format: Literal["text", "json"] = "text"
    access_log: bool = True  # one JSON line per chat request on the chatgate.access logger
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    tracing: TracingSettings | None = None  # OpenTelemetry spans, off unless configured


# --- loading ---------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Unset:
    pass


def interpolate(value: Any, env: dict[str, str], path: str = "") -> Any:
    """Replace ${VAR} and ${VAR:-default}. A value that is exactly one unset ${VAR} becomes
    None (the key is then treated as absent); an unset ${VAR} inside a longer string is an
    error naming the key."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            r = interpolate(v, env, f"{path}.{k}" if path else str(k))
            if r is not None or v is None:
                out[k] = r
        return out
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    m = _VAR.fullmatch(value)
    if m:
        name, default = m.group(1), m.group(2)
        got = env.get(name)
        if got:
            return got
        if default is not None:
            return default or None
        return None

    def sub(mm: re.Match[str]) -> str:
        got = env.get(mm.group(1))
        if got:
            return got
        if mm.group(2) is not None:
            return mm.group(2)
        raise ConfigError(f"{path}: environment variable {mm.group(1)} is not set")

    return _VAR.sub(sub, value)


_SHIELD = re.compile(r"__cgenv(\d+)__")


def _parse_yaml(text: str) -> Any:
    """YAML with ${...} hidden from the parser: `{` inside it would open a flow mapping, so
    `{api_key: ${KEY}}` (the documented shape) would not parse otherwise."""
    saved: list[str] = []

    def hide(m: re.Match[str]) -> str:
        saved.append(m.group(0))
        return f"__cgenv{len(saved) - 1}__"

    def restore(value: Any) -> Any:
        if isinstance(value, dict):
            return {restore(k): restore(v) for k, v in value.items()}
        if isinstance(value, list):
            return [restore(v) for v in value]
        if isinstance(value, str) and "__cgenv" in value:
            return _SHIELD.sub(lambda m: saved[int(m.group(1))], value)
        return value

    return restore(yaml.safe_load(_VAR.sub(hide, text)))


def _load_packaged(name: str) -> dict[str, Any]:
    text = resources.files("chatgate").joinpath(name).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _path_of(msg: str) -> tuple[str, str]:
    m = re.match(r"^(.*?)(?: - at `\$(.*)`)?$", msg, re.S)
    assert m is not None
    return m.group(1), (m.group(2) or "").lstrip(".")


def load(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Load a config file (or the built-in default when path is None) and validate it."""
    env = dict(os.environ) if env is None else env
    if path is None:
        raw: dict[str, Any] = {"sandbox": "auto"}
        source = "built-in defaults"
    else:
        p = Path(path)
        source = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
        try:
            loaded = _parse_yaml(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of keys")
        raw = loaded
    return from_dict(raw, env, source)


def from_dict(raw: dict[str, Any], env: dict[str, str], source: str = "config") -> Config:
    try:
        data = interpolate(raw, env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    catalog = interpolate(_load_packaged("catalog.yaml"), env)
    if not data.get("providers"):
        data["providers"] = catalog["providers"]
    if not data.get("models"):
        data["models"] = catalog["models"]
    builtin = _load_packaged("profiles.yaml")["profiles"]
    operator = data.get("profiles") or {}
    # The operator's profiles come first, so their patterns win over the built-in ones.
    data["profiles"] = {**operator, **{k: v for k, v in builtin.items() if k not in operator}}
    own_prices = data.get("prices") or {}
    data["prices"] = {
        **own_prices,
        **{k: v for k, v in builtin_prices().items() if k not in own_prices},
    }
    # Convert the keyed sections one entry at a time so an error names the entry
    # ("providers.openai.protocol"), not msgspec's "providers[...]".
    sections: dict[str, Any] = {}
    for key, typ in (
        ("providers", Provider),
        ("models", list[Deployment]),
        ("profiles", Profile),
        ("prices", Price),
        ("routing", Route),
    ):
        value = data.pop(key, None) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping")
        sections[key] = {str(k): _convert(v, typ, f"{key}.{k}", source) for k, v in value.items()}
    cfg: Config = _convert(data, Config, "", source)
    for key, value in sections.items():
        setattr(cfg, key, value)
    _check(cfg, source)
    return cfg


def _convert(value: Any, typ: Any, prefix: str, source: str) -> Any:
    try:
        return msgspec.convert(value, typ, str_keys=True)
    except msgspec.ValidationError as exc:
        msg, where = _path_of(str(exc))
        if m := re.match(r"Object contains unknown field `([^`]+)`", msg):
            where = f"{where}.{m.group(1)}" if where else m.group(1)
            msg = "unknown key"
        elif m := re.match(r"Object missing required field `([^`]+)`", msg):
            where = f"{where}.{m.group(1)}" if where else m.group(1)
            msg = "required key is missing"
        if where.startswith("["):
            full = f"{prefix}{where}"
        else:
            full = ".".join(p for p in (prefix, where) if p)
        raise ConfigError(f"{source}: {full or '(top level)'}: {msg}") from None


def _check(cfg: Config, source: str) -> None:
    if not 0 < cfg.listen.port < 65536:
        raise ConfigError(f"{source}: listen.port: must be 1..65535, got {cfg.listen.port}")
    if not cfg.database_url.startswith(("sqlite:", "postgresql")):
        raise ConfigError(
            f"{source}: database_url: expected sqlite:///PATH or postgresql://..., "
            f"got {cfg.database_url.split(':', 1)[0]}:..."
        )
    if cfg.redis_url is not None and not cfg.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ConfigError(
            f"{source}: redis_url: expected redis://HOST:PORT/DB, rediss://... or unix://PATH, "
            f"got {cfg.redis_url.split(':', 1)[0]}:..."
        )
    if not cfg.redis_prefix:
        raise ConfigError(f"{source}: redis_prefix: must not be empty")
    if cfg.redis_lease_seconds < 60:
        raise ConfigError(
            f"{source}: redis_lease_seconds: must be at least 60 (longer than any request), "
            f"got {cfg.redis_lease_seconds:g}"
        )
    if cfg.max_body_bytes < 1024:
        raise ConfigError(f"{source}: max_body_bytes: must be at least 1024")
    for key in ("batch_size", "max_pending"):
        if getattr(cfg.usage, key) < 1:
            raise ConfigError(f"{source}: usage.{key}: must be at least 1")
    if cfg.usage.spool_max_mb <= 0:
        raise ConfigError(f"{source}: usage.spool_max_mb: must be more than 0")
    if cfg.tracing is not None:
        if not cfg.tracing.otlp_endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"{source}: tracing.otlp_endpoint: must start with http:// or https://"
            )
        if not 0.0 <= cfg.tracing.sample_ratio <= 1.0:
            raise ConfigError(f"{source}: tracing.sample_ratio: must be between 0 and 1")
        if cfg.tracing.export_interval <= 0:
            raise ConfigError(f"{source}: tracing.export_interval: must be more than 0")
    if cfg.metrics.token is not None and len(cfg.metrics.token) < 16:
        raise ConfigError(f"{source}: metrics.token: must be at least 16 characters")
    for name, prov in cfg.providers.items():
        if not prov.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{source}: providers.{name}.base_url: must start with http:// or https://"
            )
    for model, route in cfg.routing.items():
        if model not in cfg.models:
            raise ConfigError(f"{source}: routing.{model}: no such model")
        for k in ("fallbacks", "context_fallbacks"):
            for other in getattr(route, k):
                if other not in cfg.models:
                    raise ConfigError(f"{source}: routing.{model}.{k}: unknown model '{other}'")
    for model, deps in cfg.models.items():
        if not deps:
            raise ConfigError(f"{source}: models.{model}: needs at least one deployment")
        for i, dep in enumerate(deps):
            where = f"{source}: models.{model}[{i}]"
            if dep.provider not in cfg.providers:
                known = ", ".join(sorted(cfg.providers)) or "none"
                raise ConfigError(
                    f"{where}.provider: unknown provider '{dep.provider}' (configured: {known})"
                )
            for k in dep.params:
                if k not in _REQUEST_FIELDS or k in ("model", "messages", "stream"):
                    raise ConfigError(f"{where}.params.{k}: not a chat request parameter")
            base = cfg.providers[dep.provider].protocol
            if (
                dep.protocol
                and dep.protocol != base
                and dep.protocol not in COMPATIBLE.get(base, set())
            ):
                raise ConfigError(
                    f"{where}.protocol: provider '{dep.provider}' speaks {base}; "
                    f"it cannot serve {dep.protocol}"
                )


def find_profile(cfg: Config, upstream_model: str) -> Profile:
    """Exact id first, then the first matching pattern in file order; else no restrictions."""
    if upstream_model in cfg.profiles:
        return cfg.profiles[upstream_model]
    for pattern, prof in cfg.profiles.items():
        if fnmatch.fnmatchcase(upstream_model, pattern):
            return prof
    return _EMPTY


_EMPTY = Profile()
_REQUEST_FIELDS = frozenset(ChatRequest.__struct_fields__)
