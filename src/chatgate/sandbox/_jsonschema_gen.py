"""Generate values valid against a JSON Schema (the subset used by tools and structured output).

Supported: ``type`` (single or list), ``properties``/``required``/``additionalProperties``/
``minProperties``, ``items``/``prefixItems``/``minItems``/``maxItems``/``uniqueItems``, ``enum``,
``const``, ``anyOf``/``oneOf``/``allOf``, ``minimum``/``maximum``/``exclusiveMinimum``/
``exclusiveMaximum``/``multipleOf``, ``minLength``/``maxLength``, common ``format`` values, and
local ``$ref`` (``#/$defs/...``, ``#/definitions/...``, ``#``) including recursive schemas.
``pattern`` is not honoured. Everything is driven by the ``random.Random`` passed in.
"""

from __future__ import annotations

import json
import math
import random
import re
import uuid
from collections.abc import Sequence
from typing import Any

_MAX_DEPTH = 6
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india")
_STOPWORDS = frozenset(
    """a an and are as at be but by can do does for from how i in is it me my of on or please
    the this to use using was what when where which who why will with you your""".split()  # noqa: SIM905
)
_FORMATS = {
    "date-time": "2025-01-15T10:30:00Z",
    "date": "2025-01-15",
    "time": "10:30:00",
    "email": "user@example.com",
    "uri": "https://example.com/resource",
    "url": "https://example.com/resource",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "duration": "PT1H",
}


def hint_words(text: str) -> list[str]:
    """Candidate string values from user text: capitalised words if any, else content words."""
    words = re.findall(r"[A-Za-z][A-Za-z'-]*", text)
    proper = [w for i, w in enumerate(words) if i > 0 and w[0].isupper()]
    if proper:
        return list(dict.fromkeys(proper))
    return list(dict.fromkeys(w for w in words if w.lower() not in _STOPWORDS and len(w) > 2))


def generate(schema: Any, rng: random.Random, hints: Sequence[str] = ()) -> Any:
    """A value valid against ``schema`` (whose local ``$ref`` resolve against ``schema`` itself)."""
    return _Gen(schema, rng, list(hints)).value(schema, 0)


def _pointer(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        raise ValueError(f"only local $ref are supported, got {ref!r}")
    node = root
    for raw in ref[1:].split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, val in extra.items():
        if key == "properties" and isinstance(out.get(key), dict):
            out[key] = {**out[key], **val}
        elif key == "required" and isinstance(out.get(key), list):
            out[key] = list(dict.fromkeys([*out[key], *val]))
        else:
            out[key] = val
    return out


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class _Gen:
    def __init__(self, root: Any, rng: random.Random, hints: list[str]) -> None:
        self.root = root
        self.rng = rng
        self.hints = hints

    # -- resolution ---------------------------------------------------------------------------
    def resolve(self, schema: Any, depth: int = 0) -> Any:
        while isinstance(schema, dict) and "$ref" in schema and depth < 32:
            target = _pointer(self.root, schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = _merge(target, rest) if isinstance(target, dict) else target
            depth += 1
        if isinstance(schema, dict) and "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for sub in schema["allOf"]:
                sub = self.resolve(sub, depth + 1)
                if isinstance(sub, dict):
                    merged = _merge(merged, sub)
            schema = self.resolve(merged, depth + 1)
        return schema

    # -- validation (small, used to pick oneOf branches) --------------------------------------
    def matches(self, value: Any, schema: Any) -> bool:
        schema = self.resolve(schema)
        if schema is True or schema == {}:
            return True
        if schema is False or not isinstance(schema, dict):
            return False
        if "const" in schema and value != schema["const"]:
            return False
        if "enum" in schema and value not in schema["enum"]:
            return False
        types = schema.get("type")
        if types is not None:
            allowed = set(types if isinstance(types, list) else [types])
            actual = _type_of(value)
            ok = actual in allowed or (actual == "integer" and "number" in allowed)
            if isinstance(value, float) and value.is_integer() and "integer" in allowed:
                ok = True
            if not ok:
                return False
        if isinstance(value, int | float) and not isinstance(value, bool):
            lo, hi = self.bounds(schema, 0)
            exclusive = (schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum"))
            if (lo is not None and (value < lo or (value == lo and lo == exclusive[0]))) or (
                hi is not None and (value > hi or (value == hi and hi == exclusive[1]))
            ):
                return False
        if isinstance(value, str) and not (
            schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
        ):
            return False
        if isinstance(value, dict):
            props = schema.get("properties", {})
            if any(r not in value for r in schema.get("required", [])):
                return False
            for key, val in value.items():
                sub = props.get(key, schema.get("additionalProperties", True))
                if not self.matches(val, sub):
                    return False
        items = schema.get("items")
        if isinstance(value, list) and isinstance(items, dict):
            return all(self.matches(v, items) for v in value) and self._combinators(value, schema)
        return self._combinators(value, schema)

    def _combinators(self, value: Any, schema: dict[str, Any]) -> bool:
        for key in ("anyOf", "oneOf"):
            if key in schema:
                hits = sum(self.matches(value, sub) for sub in schema[key])
                if hits == 0 or (key == "oneOf" and hits != 1):
                    return False
        return True

    # -- generation ---------------------------------------------------------------------------
    def value(self, schema: Any, depth: int, name: str = "") -> Any:
        schema = self.resolve(schema)
        if schema is True or not isinstance(schema, dict):
            return self.string({}, name)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.rng.choice(schema["enum"])
        for key in ("oneOf", "anyOf"):
            if schema.get(key):
                return self.choose(schema, key, depth, name)
        kind = self.kind(schema)
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, depth, name)
        if kind == "integer":
            return self.integer(schema)
        if kind == "number":
            return self.number(schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self.string(schema, name)

    def choose(self, schema: dict[str, Any], key: str, depth: int, name: str) -> Any:
        rest = {k: v for k, v in schema.items() if k != key}
        branches = [self.resolve(b) for b in schema[key]]
        # Prefer non-null branches, keep declaration order otherwise.
        order = sorted(range(len(branches)), key=lambda i: self.kind(branches[i]) == "null")
        fallback: Any = None
        for i in order:
            branch = branches[i]
            sub = _merge(rest, branch) if isinstance(branch, dict) else branch
            candidate = self.value(sub, depth + 1, name)
            if key == "anyOf" or self.matches(candidate, schema):
                return candidate
            fallback = candidate if fallback is None else fallback
        return fallback

    @staticmethod
    def kind(schema: Any) -> str:
        if not isinstance(schema, dict):
            return "string"
        types = schema.get("type")
        if isinstance(types, list):
            non_null = [t for t in types if t != "null"]
            return non_null[0] if non_null else "null"
        if isinstance(types, str):
            return types
        if any(k in schema for k in ("properties", "required", "additionalProperties")):
            return "object"
        if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "multipleOf")):
            return "number"
        return "string"

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties", {}) or {}
        required: list[str] = list(schema.get("required", []) or [])
        out: dict[str, Any] = {}
        for key, sub in props.items():
            if key in required or (depth < 3 and self.rng.random() < 0.5):
                out[key] = self.value(sub, depth + 1, key)
        extra = schema.get("additionalProperties", True)
        extra_schema = extra if isinstance(extra, dict) else {}
        for key in required:
            if key not in out:
                out[key] = self.value(extra_schema, depth + 1, key)
        want = int(schema.get("minProperties", 0) or 0)
        for key, sub in props.items():
            if len(out) >= want:
                break
            out.setdefault(key, self.value(sub, depth + 1, key))
        i = 0
        while len(out) < want and extra is not False:
            out[f"extra_{i}"] = self.value(extra_schema, depth + 1, f"extra_{i}")
            i += 1
        return out

    def array(self, schema: dict[str, Any], depth: int, name: str) -> list[Any]:
        lo = int(schema.get("minItems", 0) or 0)
        hi = schema.get("maxItems")
        count = lo if depth >= 3 else max(lo, 1 + self.rng.randint(0, 2))
        if hi is not None:
            count = min(count, int(hi))
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        if not isinstance(items, dict):
            items = {} if items is not False else None
        if items is None:
            count = min(count, len(prefix))
        out: list[Any] = []
        seen: set[str] = set()
        attempts = 0
        while len(out) < count and attempts < count * 10 + 10:
            attempts += 1
            pos = len(out)
            sub = prefix[pos] if pos < len(prefix) else items
            val = self.value(sub, depth + 1, name)
            sig = json.dumps(val, sort_keys=True)
            if schema.get("uniqueItems") and sig in seen:
                continue
            seen.add(sig)
            out.append(val)
        return out

    def bounds(self, schema: dict[str, Any], step: float) -> tuple[float | None, float | None]:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        ex_lo, ex_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if ex_lo is True and lo is not None:  # draft-4 boolean form
            lo += step
        elif isinstance(ex_lo, int | float) and not isinstance(ex_lo, bool):
            lo = ex_lo + step if lo is None else max(lo, ex_lo + step)
        if ex_hi is True and hi is not None:
            hi -= step
        elif isinstance(ex_hi, int | float) and not isinstance(ex_hi, bool):
            hi = ex_hi - step if hi is None else min(hi, ex_hi - step)
        return lo, hi

    def integer(self, schema: dict[str, Any]) -> int:
        lo_f, hi_f = self.bounds(schema, 1)
        lo = math.ceil(lo_f) if lo_f is not None else None
        hi = math.floor(hi_f) if hi_f is not None else None
        if lo is None:
            lo = 1 if hi is None or hi >= 1 else hi - 100
        if hi is None:
            hi = lo + 99
        mult = schema.get("multipleOf")
        if isinstance(mult, int) and mult > 0:
            first = math.ceil(lo / mult)
            last = math.floor(hi / mult)
            return mult * (self.rng.randint(first, last) if last >= first else first)
        return self.rng.randint(lo, max(lo, hi))

    def number(self, schema: dict[str, Any]) -> float | int:
        lo, hi = self.bounds(schema, 0.01)
        if lo is None:
            lo = 0.0 if hi is None or hi >= 0 else hi - 100.0
        if hi is None:
            hi = lo + 100.0
        mult = schema.get("multipleOf")
        if isinstance(mult, int | float) and mult > 0:
            first, last = math.ceil(lo / mult), math.floor(hi / mult)
            k = self.rng.randint(first, last) if last >= first else first
            return k * mult if isinstance(mult, int) else round(k * mult, 10)
        val = round(self.rng.uniform(lo, hi), 2)
        return min(max(val, lo), hi)

    def string(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        if fmt == "uuid":
            text = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        elif isinstance(fmt, str) and fmt in _FORMATS:
            text = _FORMATS[fmt]
        elif self.hints:
            text = self.rng.choice(self.hints[:6])
        else:
            text = self.rng.choice(_WORDS)
        lo = int(schema.get("minLength", 0) or 0)
        hi = schema.get("maxLength")
        if len(text) < lo:
            text = text + "x" * (lo - len(text))
        if hi is not None and len(text) > int(hi):
            text = text[: int(hi)]
        return text


def strict_problem(schema: Any, ctx: tuple[str, ...] = ()) -> str | None:
    """Why ``schema`` is not a valid *strict* schema (OpenAI structured outputs), or None.

    Strict mode requires ``additionalProperties: false`` and every property listed in
    ``required`` on each object schema.
    """
    if not isinstance(schema, dict):
        return None
    where = f"In context={ctx!r}, "
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return where + "'additionalProperties' is required to be supplied and to be false."
        required = schema.get("required") or []
        absent = [k for k in (schema.get("properties") or {}) if k not in required]
        if absent:
            return (
                where + "'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{absent[0]}'."
            )
    subs: list[tuple[tuple[str, ...], Any]] = []
    for key in ("properties", "$defs", "definitions"):
        subs += [((*ctx, key, name), sub) for name, sub in (schema.get(key) or {}).items()]
    if isinstance(schema.get("items"), dict):
        subs.append(((*ctx, "items"), schema["items"]))
    for key in ("anyOf", "allOf"):
        subs += [((*ctx, key, str(j)), sub) for j, sub in enumerate(schema.get(key) or [])]
    for sub_ctx, sub in subs:
        problem = strict_problem(sub, sub_ctx)
        if problem is not None:
            return problem
    return None
