"""Model table and request validation for the Gemini API emulator (generativelanguage v1beta).

Written from the google-genai SDK's types and ``_*_to_mldev`` converters, the recorded payloads
and error messages users reported from the real API. Errors are raised as :class:`GeminiError`
and rendered in Google's envelope (``{"error": {"code", "message", "status", "details"?}}``).

Validation happens in two passes, like the real front end:

1. *Syntax* (proto JSON parsing): every object is checked against its message's fields, in
   camelCase or snake_case (``generationConfig`` / ``generation_config``); an unknown name gives
   ``Invalid JSON payload received. Unknown name "foo" at 'generation_config': Cannot find
   field.``, a value of the wrong type ``Invalid value at 'generation_config.temperature'
   (TYPE_FLOAT), "hot"``. Paths are snake_case with indices (``contents[1].parts[0]``) and map
   entries show as ``properties[2].value``, as in the real messages.
2. *Semantics*: ranges, roles, function call / response pairing, thought signatures, thinking
   configuration... reported as ``* GenerateContentRequest.<path>: <problem>\\n`` (the real API's
   format for field violations) or with the real API's own sentence where one is known.

Free-form fields (``functionCall.args``, ``functionResponse.response``, ``parametersJsonSchema``,
``responseJsonSchema``) are JSON values and are not renamed or checked field by field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
API = "type.googleapis.com/google.ai.generativelanguage.v1beta"


def status_name(code: int) -> str:
    if code in STATUS_NAMES:
        return STATUS_NAMES[code]
    return "INTERNAL" if code >= 500 else "FAILED_PRECONDITION"


class GeminiError(Exception):
    """A Google API error: HTTP status, ``error.status`` name, message, optional details."""

    def __init__(
        self,
        code: int,
        message: str,
        status: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or status_name(code)
        self.details = details

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details is not None:
            err["details"] = self.details
        return {"error": err}


def bad(message: str) -> GeminiError:
    return GeminiError(400, message)


def field_error(path: str, problem: str) -> GeminiError:
    """A semantic violation, in the real API's ``* GenerateContentRequest.<path>: ...`` form."""
    where = f"GenerateContentRequest.{path}" if path else "GenerateContentRequest"
    return bad(f"* {where}: {problem}\n")


# --------------------------------------------------------------------------------------------
# Model table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeminiModel:
    id: str
    display_name: str
    gen3: bool  # Gemini 3: thinking levels, thought signatures required on function calls
    levels: tuple[str, ...]  # accepted thinkingLevel values (lower case); () = not supported
    default_level: str | None
    budget: tuple[int, int]  # accepted thinkingBudget range (-1 = dynamic is always accepted)
    input_limit: int = 1_048_576
    output_limit: int = 65_536

    @property
    def can_disable_thinking(self) -> bool:
        return self.budget[0] == 0


MODELS = {
    m.id: m
    for m in (
        GeminiModel("gemini-3-pro-preview", "Gemini 3 Pro Preview", True,
                    ("low", "high"), "high", (128, 32768)),
        # Gemini 3.1 Pro added the MEDIUM level (langchain-ai/langchainjs#10101).
        GeminiModel("gemini-3.1-pro-preview", "Gemini 3.1 Pro Preview", True,
                    ("low", "medium", "high"), "high", (128, 32768)),
        GeminiModel("gemini-3-flash-preview", "Gemini 3 Flash Preview", True,
                    ("minimal", "low", "medium", "high"), "high", (0, 24576)),
        GeminiModel("gemini-2.5-pro", "Gemini 2.5 Pro", False, (), None, (128, 32768)),
        GeminiModel("gemini-2.5-flash", "Gemini 2.5 Flash", False, (), None, (0, 24576)),
    )
}  # fmt: skip


def not_found(model: str, method: str = "generateContent") -> GeminiError:
    return GeminiError(
        404,
        f"models/{model} is not found for API version v1beta, or is not supported for "
        f"{method}. Call ListModels to see the list of available models and their supported "
        "methods.",
    )


# --------------------------------------------------------------------------------------------
# Thought signatures. The sandbox's own signatures are recognisable (a marker after decoding)
# and bound to what they were issued for: a function call's name and arguments, or nothing in
# particular for text parts (streamed text is split, so the text cannot be bound). Signatures
# the sandbox did not issue (the real API's, Google's documented dummy values) are accepted.
# --------------------------------------------------------------------------------------------

_SIG_MARK = b"\x0a\x12chatgate-sandbox-sig\x12"
_SIG_KEY = b"chatgate-sandbox-gemini-signing-key"


def _stretch(seed: bytes, n: int) -> bytes:
    out, block = b"", seed
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return out[:n]


def call_payload(name: str, args: Any) -> bytes:
    return (name + "\x00" + json.dumps(args, sort_keys=True, ensure_ascii=False)).encode()


def sign(kind: str, payload: bytes, nonce: bytes) -> str:
    """A base64 thought signature of ``kind`` (``c``: function call, ``t``: text part)."""
    head = _SIG_MARK + kind.encode() + nonce
    mac = hmac.new(_SIG_KEY, head + payload, hashlib.sha256).digest()
    return base64.b64encode(head + mac + _stretch(mac, 96)).decode()


def decode_b64(text: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional (what proto JSON ``bytes`` accepts)."""
    if not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", text):
        return None
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        return None
    try:
        return base64.b64decode(
            body.replace("-", "+").replace("_", "/") + "=" * (-len(body) % 4), validate=True
        )
    except (binascii.Error, ValueError):
        return None


def signature_ok(signature: str, kind: str, payload: bytes) -> bool:
    """False only for a sandbox-issued signature that does not belong where it was found."""
    raw = decode_b64(signature)
    if raw is None or not raw.startswith(_SIG_MARK):
        return True
    rest = raw[len(_SIG_MARK) :]
    if len(rest) < 1 + 16 + 32:
        return False
    got_kind, nonce, mac = rest[:1].decode("latin-1"), rest[1:17], rest[17:49]
    if got_kind == "t":
        payload = b""  # text signatures are not bound to the text
    elif got_kind != kind:
        return False
    head = _SIG_MARK + got_kind.encode("latin-1") + nonce
    want = hmac.new(_SIG_KEY, head + payload, hashlib.sha256).digest()
    return hmac.compare_digest(mac, want)


# --------------------------------------------------------------------------------------------
# Syntax: the proto messages of GenerateContentRequest, field by field (wire names in camelCase;
# snake_case aliases are derived). Kinds: str, int32, int64, float, double, bool, bytes,
# struct (a JSON object), value (any JSON), enum:E, msg:M, rep:<kind>, map:M.
# --------------------------------------------------------------------------------------------

SPECS: dict[str, dict[str, str]] = {
    "GenerateContentRequest": {
        "model": "str", "contents": "rep:msg:Content", "systemInstruction": "msg:Content",
        "tools": "rep:msg:Tool", "toolConfig": "msg:ToolConfig",
        "safetySettings": "rep:msg:SafetySetting", "generationConfig": "msg:GenerationConfig",
        "cachedContent": "str",
    },
    "Content": {"role": "str", "parts": "rep:msg:Part"},
    "Part": {
        "text": "str", "inlineData": "msg:Blob", "fileData": "msg:FileData",
        "functionCall": "msg:FunctionCall", "functionResponse": "msg:FunctionResponse",
        "executableCode": "msg:ExecutableCode", "codeExecutionResult": "msg:CodeExecutionResult",
        "thought": "bool", "thoughtSignature": "bytes", "videoMetadata": "msg:VideoMetadata",
        "partMetadata": "struct",
    },
    "Blob": {"mimeType": "str", "data": "bytes"},
    "FileData": {"mimeType": "str", "fileUri": "str"},
    "FunctionCall": {"id": "str", "name": "str", "args": "struct"},
    "FunctionResponse": {
        "id": "str", "name": "str", "response": "struct", "willContinue": "bool",
        "scheduling": "enum:Scheduling",
    },
    "ExecutableCode": {"language": "enum:Language", "code": "str"},
    "CodeExecutionResult": {"outcome": "enum:Outcome", "output": "str"},
    "VideoMetadata": {"startOffset": "str", "endOffset": "str", "fps": "double"},
    "Tool": {
        "functionDeclarations": "rep:msg:FunctionDeclaration", "googleSearch": "msg:GoogleSearch",
        "googleSearchRetrieval": "struct", "codeExecution": "msg:Empty", "urlContext": "msg:Empty",
    },
    "Empty": {},
    "GoogleSearch": {"timeRangeFilter": "struct"},
    "FunctionDeclaration": {
        "name": "str", "description": "str", "parameters": "msg:Schema",
        "parametersJsonSchema": "value", "response": "msg:Schema", "responseJsonSchema": "value",
        "behavior": "enum:Behavior",
    },
    "Schema": {
        "type": "enum:Type", "format": "str", "title": "str", "description": "str",
        "nullable": "bool", "enum": "rep:str", "maxItems": "int64", "minItems": "int64",
        "properties": "map:Schema", "required": "rep:str", "minProperties": "int64",
        "maxProperties": "int64", "minLength": "int64", "maxLength": "int64", "pattern": "str",
        "example": "value", "anyOf": "rep:msg:Schema", "propertyOrdering": "rep:str",
        "default": "value", "items": "msg:Schema", "minimum": "double", "maximum": "double",
    },
    "ToolConfig": {"functionCallingConfig": "msg:FunctionCallingConfig",
                   "retrievalConfig": "struct"},
    "FunctionCallingConfig": {"mode": "enum:Mode", "allowedFunctionNames": "rep:str"},
    "SafetySetting": {"category": "enum:HarmCategory", "threshold": "enum:HarmBlockThreshold"},
    "GenerationConfig": {
        "candidateCount": "int32", "stopSequences": "rep:str", "maxOutputTokens": "int32",
        "temperature": "float", "topP": "float", "topK": "int32", "seed": "int32",
        "responseMimeType": "str", "responseSchema": "msg:Schema", "responseJsonSchema": "value",
        "presencePenalty": "float", "frequencyPenalty": "float", "responseLogprobs": "bool",
        "logprobs": "int32", "enableEnhancedCivicAnswers": "bool",
        "responseModalities": "rep:enum:Modality", "speechConfig": "struct",
        "thinkingConfig": "msg:ThinkingConfig", "mediaResolution": "enum:MediaResolution",
    },
    "ThinkingConfig": {"includeThoughts": "bool", "thinkingBudget": "int32",
                       "thinkingLevel": "enum:ThinkingLevel"},
}  # fmt: skip

ENUMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Scheduling": ("FunctionResponse.Scheduling",
                   ("SCHEDULING_UNSPECIFIED", "SILENT", "WHEN_IDLE", "INTERRUPT")),
    "Language": ("ExecutableCode.Language", ("LANGUAGE_UNSPECIFIED", "PYTHON")),
    "Outcome": ("CodeExecutionResult.Outcome", ("OUTCOME_UNSPECIFIED", "OUTCOME_OK",
                                                "OUTCOME_FAILED", "OUTCOME_DEADLINE_EXCEEDED")),
    "Behavior": ("FunctionDeclaration.Behavior", ("UNSPECIFIED", "BLOCKING", "NON_BLOCKING")),
    "Type": ("Type", ("TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY",
                      "OBJECT", "NULL")),
    "Mode": ("FunctionCallingConfig.Mode", ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE",
                                            "VALIDATED")),
    "HarmCategory": ("HarmCategory", (
        "HARM_CATEGORY_UNSPECIFIED", "HARM_CATEGORY_DEROGATORY", "HARM_CATEGORY_TOXICITY",
        "HARM_CATEGORY_VIOLENCE", "HARM_CATEGORY_SEXUAL", "HARM_CATEGORY_MEDICAL",
        "HARM_CATEGORY_DANGEROUS", "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_DANGEROUS_CONTENT",
        "HARM_CATEGORY_CIVIC_INTEGRITY")),
    "HarmBlockThreshold": ("SafetySetting.HarmBlockThreshold", (
        "HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF")),
    "Modality": ("GenerationConfig.Modality", ("MODALITY_UNSPECIFIED", "TEXT", "IMAGE",
                                               "AUDIO")),
    "MediaResolution": ("GenerationConfig.MediaResolution", (
        "MEDIA_RESOLUTION_UNSPECIFIED", "MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_MEDIUM",
        "MEDIA_RESOLUTION_HIGH")),
    "ThinkingLevel": ("GenerationConfig.ThinkingConfig.ThinkingLevel", (
        "THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH")),
}  # fmt: skip

PART_DATA = (
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult",
)  # fmt: skip
_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_SCALAR_TYPE = {
    "str": "TYPE_STRING", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "float": "TYPE_FLOAT",
    "double": "TYPE_DOUBLE", "bool": "TYPE_BOOL", "bytes": "TYPE_BYTES",
}  # fmt: skip


def snake(name: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", name).lower()


ALIASES: dict[str, dict[str, str]] = {
    tname: {**{snake(f): f for f in spec}, **{f: f for f in spec}} for tname, spec in SPECS.items()
}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def invalid_value(path: str, type_name: str, value: Any) -> GeminiError:
    return bad(f"Invalid value at '{path}' ({type_name}), {_show(value)}")


def unknown_name(key: str, path: str) -> GeminiError:
    where = f" at '{path}'" if path else ""
    return bad(f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.')


def parse_message(obj: Any, tname: str, path: str) -> dict[str, Any]:
    """Check ``obj`` against message ``tname``; return it with canonical (camelCase) keys."""
    if not isinstance(obj, dict):
        if not path:
            raise bad("Invalid JSON payload received. Root element must be a message.")
        raise invalid_value(path, f"{API}.{tname}", obj)
    spec, aliases = SPECS[tname], ALIASES[tname]
    out: dict[str, Any] = {}
    data_set: str | None = None
    for key, val in obj.items():
        canon = aliases.get(key)
        if canon is None:
            raise unknown_name(key, path)
        kind = spec[canon]
        if isinstance(val, list) and not kind.startswith("rep:") and kind != "value":
            where = f" at '{path}'" if path else ""
            raise bad(
                f'Invalid JSON payload received. Unknown name "{key}"{where}: Proto field is '
                "not repeating, cannot start list."
            )
        if val is None:
            continue
        if tname == "Part" and canon in PART_DATA:
            if data_set is not None:
                raise bad(
                    f"Invalid value at '{path}' (oneof), oneof field 'data' is already set. "
                    f"Cannot set '{key}'"
                )
            data_set = key
        out[canon] = _parse(val, kind, _join(path, snake(canon)))
    return out


def _parse(val: Any, kind: str, path: str) -> Any:
    if kind.startswith("rep:"):
        inner = kind[4:]
        if not isinstance(val, list):
            type_name = f"{API}.{inner[4:]}" if inner.startswith("msg:") else _type_name(inner)
            raise invalid_value(path, type_name, val)
        return [_parse(v, inner, f"{path}[{i}]") for i, v in enumerate(val)]
    if kind.startswith("msg:"):
        return parse_message(val, kind[4:], path)
    if kind.startswith("map:"):
        if not isinstance(val, dict):
            raise invalid_value(path, f"{API}.{kind[4:]}", val)
        return {
            k: parse_message(v, kind[4:], f"{path}[{i}].value")
            for i, (k, v) in enumerate(val.items())
        }
    if kind.startswith("enum:"):
        return _parse_enum(val, kind[5:], path)
    return _parse_scalar(val, kind, path)


def _type_name(kind: str) -> str:
    if kind.startswith("enum:"):
        return f"{API}.{ENUMS[kind[5:]][0]}"
    return _SCALAR_TYPE.get(kind, "type.googleapis.com/google.protobuf.Value")


def _parse_enum(val: Any, name: str, path: str) -> str:
    full, values = ENUMS[name]
    if isinstance(val, str):
        for v in values:
            if v.lower() == val.strip().lower():
                return v
    elif isinstance(val, int) and not isinstance(val, bool) and 0 <= val < len(values):
        return values[val]
    raise invalid_value(path, f"{API}.{full}", val)


def _parse_scalar(val: Any, kind: str, path: str) -> Any:
    if kind == "value":
        return val
    if kind == "struct":
        if not isinstance(val, dict):
            raise invalid_value(path, "type.googleapis.com/google.protobuf.Struct", val)
        return val
    type_name = _SCALAR_TYPE[kind]
    if kind == "str":
        if isinstance(val, str):
            return val
    elif kind == "bool":
        if isinstance(val, bool):
            return val
    elif kind == "bytes":
        if isinstance(val, str):
            if decode_b64(val) is None:
                raise bad(f"Invalid value at '{path}' ({type_name}), Base64 decoding failed for "
                          f"{_show(val)}")  # fmt: skip
            return val
    elif kind in _INT_RANGE:
        num = _number(val)
        lo, hi = _INT_RANGE[kind]
        if num is not None and float(num).is_integer() and lo <= num <= hi:
            return int(num)
    else:  # float / double
        num = _number(val)
        if num is not None:
            return float(num)
    raise invalid_value(path, type_name, val)


def _number(val: Any) -> float | int | None:
    if isinstance(val, bool):
        return None
    if isinstance(val, int | float):
        return val
    if isinstance(val, str):  # proto JSON accepts numbers in strings
        try:
            return int(val) if re.fullmatch(r"-?\d+", val.strip()) else float(val)
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------------------------
# OpenAPI-subset Schema (responseSchema, FunctionDeclaration.parameters) -> JSON Schema
# --------------------------------------------------------------------------------------------

_COPY = ("format", "title", "description", "minItems", "maxItems", "minLength", "maxLength",
         "minProperties", "maxProperties", "pattern", "minimum", "maximum", "required",
         "default")  # fmt: skip


def openapi_to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Convert a parsed ``Schema`` message (types like ``"OBJECT"``) to plain JSON Schema."""
    out: dict[str, Any] = {}
    kind = schema.get("type", "TYPE_UNSPECIFIED")
    json_type = None if kind == "TYPE_UNSPECIFIED" else kind.lower()
    if json_type is not None:
        out["type"] = [json_type, "null"] if schema.get("nullable") else json_type
    for key in _COPY:
        if key in schema:
            out[key] = schema[key]
    if "enum" in schema:
        values: list[Any] = list(schema["enum"])
        if json_type in ("integer", "number"):
            conv = int if json_type == "integer" else float
            try:
                values = [conv(v) for v in values]
            except ValueError:
                pass
        if schema.get("nullable"):
            values.append(None)
        out["enum"] = values
    if "properties" in schema:
        out["properties"] = {k: openapi_to_json_schema(v) for k, v in schema["properties"].items()}
    if "items" in schema:
        out["items"] = openapi_to_json_schema(schema["items"])
    if "anyOf" in schema:
        out["anyOf"] = [openapi_to_json_schema(s) for s in schema["anyOf"]]
    return out


def _check_schema(schema: dict[str, Any], path: str) -> None:
    """Semantic checks on an OpenAPI-subset Schema (the ones the real API reports)."""
    props = schema.get("properties") or {}
    for i, name in enumerate(schema.get("required") or []):
        if name not in props:
            raise field_error(f"{path}.required[{i}]", "property is not defined")
    for i, (_, sub) in enumerate(props.items()):
        _check_schema(sub, f"{path}.properties[{i}].value")
    if "items" in schema:
        _check_schema(schema["items"], f"{path}.items")
    for i, sub in enumerate(schema.get("anyOf") or []):
        _check_schema(sub, f"{path}.any_of[{i}]")


# --------------------------------------------------------------------------------------------
# Semantics
# --------------------------------------------------------------------------------------------

FUNCTION_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}$")
INVALID_NAME = (
    "Invalid function name. Must start with a letter or an underscore. Must be alphameric "
    "(a-z, A-Z, 0-9), underscores (_), dots (.), colons (:) or dashes (-), with a maximum "
    "length of 128."
)
MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required for "
    "tools to work correctly, and missing thought_signature may lead to degraded model "
    "performance. Additional data, function call `default_api:{name}` , position {pos}. Please "
    "refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)
MIME_TYPES = ("text/plain", "application/json", "application/xml", "application/yaml",
              "text/x.enum")  # fmt: skip
_MEDIA_PREFIXES = ("image/", "audio/", "video/", "text/")
_MEDIA_TYPES = ("application/pdf", "application/json", "application/xml", "application/rtf",
                "application/x-javascript", "application/x-typescript",
                "application/x-python-code")  # fmt: skip


@dataclass
class GenerateParams:
    model: GeminiModel
    contents: list[dict[str, Any]]
    system_parts: list[dict[str, Any]]
    declarations: list[dict[str, Any]]  # each with "jsonSchema": the parameters as JSON Schema
    google_search: bool
    mode: str  # AUTO / ANY / NONE / VALIDATED
    allowed: list[str] | None
    candidate_count: int
    max_output: int
    stop: list[str]
    response_logprobs: bool
    logprobs: int | None
    mime: str
    schema: dict[str, Any] | None  # response schema as JSON Schema
    include_thoughts: bool
    thinking_budget: int | None
    thinking_level: str | None  # lower case
    seed: int | None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def thinking(self) -> bool:
        return self.thinking_budget != 0


def _part_kind(part: dict[str, Any]) -> str | None:
    return next((k for k in PART_DATA if k in part), None)


def _check_name(name: Any, path: str) -> str:
    if not name:
        raise field_error(path, "Name cannot be empty.")
    if not FUNCTION_NAME_RE.match(name):
        raise field_error(path, INVALID_NAME)
    return str(name)


def _check_media(mime: str | None, path: str) -> None:
    if not mime:
        raise field_error(f"{path}.mime_type", "mime_type is not specified")
    low = mime.lower()
    if not (low.startswith(_MEDIA_PREFIXES) or low in _MEDIA_TYPES):
        raise bad(f"Unsupported MIME type: {mime}")


def _check_part(part: dict[str, Any], path: str, role: str) -> None:
    kind = _part_kind(part)
    if kind is None:
        raise field_error(f"{path}.data", "required oneof field 'data' must have one initialized "
                          "field")  # fmt: skip
    if kind == "inlineData":
        blob = part["inlineData"]
        _check_media(blob.get("mimeType"), f"{path}.inline_data")
        if not blob.get("data"):
            raise field_error(f"{path}.inline_data.data", "data is not specified")
    elif kind == "fileData":
        fd = part["fileData"]
        if not fd.get("fileUri"):
            raise field_error(f"{path}.file_data.file_uri", "file_uri is not specified")
        if fd.get("mimeType"):
            _check_media(fd["mimeType"], f"{path}.file_data")
    elif kind == "functionCall":
        if role != "model":
            raise field_error(
                f"{path}.function_call",
                'a function call is only allowed in a turn with role "model"',
            )
        _check_name(part["functionCall"].get("name"), f"{path}.function_call.name")
    elif kind == "functionResponse":
        if role != "user":
            raise field_error(
                f"{path}.function_response",
                'a function response is only allowed in a turn with role "user"',
            )
        fr = part["functionResponse"]
        _check_name(fr.get("name"), f"{path}.function_response.name")
        if "response" not in fr:
            raise field_error(f"{path}.function_response.response", "response is required")


def _check_contents(contents: list[dict[str, Any]]) -> None:
    if not contents:
        raise field_error("contents", "contents is not specified")
    for i, content in enumerate(contents):
        role = content.get("role") or "user"
        if role not in ("user", "model"):
            raise bad("Please use a valid role: user, model.")
        content["role"] = role
        parts = content.get("parts") or []
        if not parts:
            raise field_error(f"contents[{i}].parts", "contents.parts must not be empty.")
        content["parts"] = parts
        for j, part in enumerate(parts):
            _check_part(part, f"contents[{i}].parts[{j}]", role)


def _calls(content: dict[str, Any]) -> list[dict[str, Any]]:
    return [p["functionCall"] for p in content["parts"] if "functionCall" in p]


def _responses(content: dict[str, Any]) -> list[dict[str, Any]]:
    return [p["functionResponse"] for p in content["parts"] if "functionResponse" in p]


def _check_pairing(contents: list[dict[str, Any]]) -> None:
    """Function call turns follow a user turn; function responses answer the turn before."""
    for i, content in enumerate(contents):
        if (
            content["role"] == "model"
            and _calls(content)
            and (i == 0 or contents[i - 1]["role"] != "user")
        ):
            raise bad(
                "Please ensure that function call turn comes immediately after a user turn "
                "or after a function response turn."
            )
        responses = _responses(content)
        if not responses:
            continue
        prev = contents[i - 1] if i > 0 else None
        calls = _calls(prev) if prev is not None and prev["role"] == "model" else []
        if not calls:
            raise bad(
                "Please ensure that function response turn comes immediately after a function "
                "call turn."
            )
        if len(calls) != len(responses):
            raise bad(
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn."
            )
        with_ids = all(c.get("id") for c in calls) and all(r.get("id") for r in responses)
        if with_ids:
            by_id = {c["id"]: c["name"] for c in calls}
            expected = [by_id.get(r["id"]) for r in responses]
        else:
            expected = [c["name"] for c in calls]
        for k, (resp, want) in enumerate(zip(responses, expected, strict=True)):
            if resp["name"] != want:
                j = [n for n, p in enumerate(content["parts"]) if "functionResponse" in p][k]
                shown = f"'{want}'" if want is not None else "(no call with this id)"
                raise field_error(
                    f"contents[{i}].parts[{j}].function_response.name",
                    f"function response '{resp['name']}' does not answer the function call "
                    f"{shown} of the function call turn",
                )


def _check_signatures(contents: list[dict[str, Any]], model: GeminiModel) -> None:
    # Sandbox-issued signatures must belong to the part they are on, on every model.
    for content in contents:
        for part in content["parts"]:
            sig = part.get("thoughtSignature")
            if sig is None:
                continue
            if "functionCall" in part:
                fc = part["functionCall"]
                ok = signature_ok(sig, "c", call_payload(fc["name"], fc.get("args") or {}))
            else:
                ok = signature_ok(sig, "t", b"")
            if not ok:
                raise bad("Corrupted thought signature.")
    if not model.gen3:
        return
    # Gemini 3: in the current turn (after the last user turn with text), the first function
    # call of each model step must carry its thought signature.
    start = 0
    for i, content in enumerate(contents):
        if content["role"] == "user" and any("text" in p for p in content["parts"]):
            start = i + 1
    for i in range(start, len(contents)):
        content = contents[i]
        if content["role"] != "model":
            continue
        first = next((p for p in content["parts"] if "functionCall" in p), None)
        if first is not None and not first.get("thoughtSignature"):
            name = first["functionCall"]["name"]
            raise bad(MISSING_SIGNATURE.format(name=name, pos=i + 1))


def _check_system(raw: dict[str, Any] | None) -> list[dict[str, Any]]:
    if raw is None:
        return []
    parts = raw.get("parts") or []
    if not parts:
        raise field_error("system_instruction.parts", "contents.parts must not be empty.")
    for j, part in enumerate(parts):
        kind = _part_kind(part)
        path = f"system_instruction.parts[{j}]"
        if kind is None:
            raise field_error(f"{path}.data", "required oneof field 'data' must have one "
                              "initialized field")  # fmt: skip
        if kind in ("functionCall", "functionResponse"):
            raise field_error(path, "function parts are not allowed in system_instruction")
    return list(parts)


def _check_tools(tools: list[dict[str, Any]], model: GeminiModel) -> tuple[list[Any], bool]:
    decls: list[dict[str, Any]] = []
    seen: set[str] = set()
    search = False
    for t, tool in enumerate(tools):
        if not tool:
            raise field_error(f"tools[{t}]", "a tool must declare functions or a built-in tool")
        if "googleSearchRetrieval" in tool:
            raise bad("google_search_retrieval is not supported. Please use google_search tool "
                      "instead.")  # fmt: skip
        search = search or "googleSearch" in tool
        for d, decl in enumerate(tool.get("functionDeclarations") or []):
            path = f"tools[{t}].function_declarations[{d}]"
            name = _check_name(decl.get("name"), f"{path}.name")
            if name in seen:
                raise bad(f"Duplicate function declaration found: {name}")
            seen.add(name)
            if "parameters" in decl and "parametersJsonSchema" in decl:
                raise field_error(
                    f"{path}.parameters_json_schema",
                    "parameters_json_schema and parameters cannot both be set",
                )
            if "parameters" in decl:
                _check_schema(decl["parameters"], f"{path}.parameters")
                schema: Any = openapi_to_json_schema(decl["parameters"])
            elif "parametersJsonSchema" in decl:
                schema = decl["parametersJsonSchema"]
                if not isinstance(schema, dict | bool):
                    raise field_error(f"{path}.parameters_json_schema",
                                      "must be a JSON Schema object")  # fmt: skip
            else:
                schema = {"type": "object", "properties": {}}
            decls.append({**decl, "jsonSchema": schema})
    return decls, search


def _check_tool_config(
    raw: dict[str, Any] | None, decls: list[dict[str, Any]]
) -> tuple[str, list[str] | None]:
    fcc = (raw or {}).get("functionCallingConfig") or {}
    mode = fcc.get("mode", "MODE_UNSPECIFIED")
    mode = "AUTO" if mode == "MODE_UNSPECIFIED" else mode
    allowed = fcc.get("allowedFunctionNames")
    path = "tool_config.function_calling_config"
    if allowed is not None and mode != "ANY":
        raise field_error(
            f"{path}.allowed_function_names",
            "allowed_function_names should only be set when the mode is ANY",
        )
    if (mode in ("ANY", "VALIDATED") or allowed) and not decls:
        raise bad("Function calling config is set without function_declarations.")
    names = {d["name"] for d in decls}
    for i, name in enumerate(allowed or []):
        if name not in names:
            raise field_error(
                f"{path}.allowed_function_names[{i}]", f"function '{name}' is not declared in tools"
            )
    return mode, allowed


def _range(cfg: dict[str, Any], key: str, lo: float, hi: float) -> None:
    if key in cfg and not lo <= cfg[key] <= hi:
        value = cfg[key]
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        raise field_error(
            f"generation_config.{snake(key)}",
            f"{snake(key)} must be in the range [{lo:g}, {hi:g}], got {shown}",
        )


def _check_thinking(cfg: dict[str, Any], model: GeminiModel) -> tuple[bool, int | None, str | None]:
    tc = cfg.get("thinkingConfig") or {}
    budget = tc.get("thinkingBudget")
    level = tc.get("thinkingLevel")
    level = None if level in (None, "THINKING_LEVEL_UNSPECIFIED") else level
    if budget is not None and level is not None:
        raise bad("You can only set only one of thinking budget and thinking level.")
    if level is not None:
        if not model.levels:
            raise bad("Thinking level is not supported for this model.")
        if level.lower() not in model.levels:
            raise bad(f"Thinking level {level} is not supported for this model. Please retry "
                      "with other thinking level.")  # fmt: skip
    if budget is not None and budget != -1:
        lo, hi = model.budget
        if budget == 0 and lo > 0:
            raise bad("Budget 0 is invalid. This model only works in thinking mode.")
        if not lo <= budget <= hi:
            raise bad(f"The thinking budget ({budget}) is invalid. Please choose a value "
                      f"between {lo} and {hi}.")  # fmt: skip
    if budget == -1:
        budget = None
    return bool(tc.get("includeThoughts")), budget, level.lower() if level else None


def _check_generation(cfg: dict[str, Any], model: GeminiModel, decls: list[Any]) -> None:
    _range(cfg, "temperature", 0, 2)
    _range(cfg, "topP", 0, 1)
    _range(cfg, "candidateCount", 1, 8)
    _range(cfg, "maxOutputTokens", 1, model.output_limit)
    _range(cfg, "presencePenalty", -2, 2)
    _range(cfg, "frequencyPenalty", -2, 2)
    _range(cfg, "logprobs", 1, 20)
    if "topK" in cfg and cfg["topK"] < 1:
        raise field_error("generation_config.top_k", "top_k must be a positive integer")
    stops = cfg.get("stopSequences") or []
    if len(stops) > 5:
        raise field_error("generation_config.stop_sequences",
                          "the number of stop_sequences must not exceed 5")  # fmt: skip
    if any(s == "" for s in stops):
        raise field_error("generation_config.stop_sequences", "stop sequences must not be empty")
    if "logprobs" in cfg and not cfg.get("responseLogprobs"):
        raise field_error(
            "generation_config.logprobs", "logprobs can only be set when response_logprobs is true"
        )
    modalities = [m for m in cfg.get("responseModalities") or [] if m != "MODALITY_UNSPECIFIED"]
    if any(m != "TEXT" for m in modalities):
        raise bad(
            "The requested combination of response modalities ("
            + ", ".join(m for m in modalities)
            + ") is not supported by the model. "
            f"models/{model.id} accepts the following combination of response modalities:\n"
            "* TEXT\n"
        )
    mime = cfg.get("responseMimeType") or "text/plain"
    if mime not in MIME_TYPES:
        raise field_error(
            "generation_config.response_mime_type",
            "allowed mimetypes are `text/plain`, `application/json`, `application/xml`, "
            "`application/yaml` and `text/x.enum`.",
        )
    if "responseSchema" in cfg and "responseJsonSchema" in cfg:
        raise field_error(
            "generation_config.response_json_schema",
            "response_json_schema and response_schema cannot both be set",
        )
    if "responseSchema" in cfg:
        if mime not in ("application/json", "text/x.enum"):
            raise field_error("generation_config.response_mime_type",
                              "response_mime_type must be application/json or text/x.enum when "
                              "response_schema is set")  # fmt: skip
        _check_schema(cfg["responseSchema"], "generation_config.response_schema")
        if mime == "text/x.enum" and not cfg["responseSchema"].get("enum"):
            raise field_error(
                "generation_config.response_schema", "an enum schema is required with text/x.enum"
            )
    if "responseJsonSchema" in cfg:
        if mime != "application/json":
            raise field_error("generation_config.response_mime_type",
                              "response_mime_type must be application/json when "
                              "response_json_schema is set")  # fmt: skip
        if not isinstance(cfg["responseJsonSchema"], dict | bool):
            raise field_error(
                "generation_config.response_json_schema", "must be a JSON Schema object"
            )
    if mime == "text/x.enum" and "responseSchema" not in cfg:
        raise field_error(
            "generation_config.response_schema", "response_schema is required with text/x.enum"
        )
    if decls and mime == "application/json" and not model.gen3:
        raise bad("Function calling with a response mime type: 'application/json' is "
                  "unsupported")  # fmt: skip


def validate(body: Any, model: GeminiModel) -> GenerateParams:
    """Check a GenerateContentRequest body (already JSON-decoded) for ``model``."""
    req = parse_message(body, "GenerateContentRequest", "")
    if "cachedContent" in req:
        name = req["cachedContent"]
        if not name.startswith("cachedContents/"):
            raise field_error("cached_content", "cached_content must look like "
                              "cachedContents/{id}")  # fmt: skip
        raise GeminiError(403, "CachedContent not found (or permission denied)")
    contents: list[dict[str, Any]] = req.get("contents") or []
    _check_contents(contents)
    _check_pairing(contents)
    _check_signatures(contents, model)
    system_parts = _check_system(req.get("systemInstruction"))
    decls, search = _check_tools(req.get("tools") or [], model)
    mode, allowed = _check_tool_config(req.get("toolConfig"), decls)
    cfg: dict[str, Any] = req.get("generationConfig") or {}
    _check_generation(cfg, model, decls)
    include, budget, level = _check_thinking(cfg, model)
    schema: dict[str, Any] | None = None
    if "responseSchema" in cfg:
        schema = openapi_to_json_schema(cfg["responseSchema"])
    elif isinstance(cfg.get("responseJsonSchema"), dict):
        schema = cfg["responseJsonSchema"]
    return GenerateParams(
        model=model,
        contents=contents,
        system_parts=system_parts,
        declarations=decls,
        google_search=search,
        mode=mode,
        allowed=allowed,
        candidate_count=cfg.get("candidateCount", 1),
        max_output=cfg.get("maxOutputTokens", model.output_limit),
        stop=list(cfg.get("stopSequences") or []),
        response_logprobs=bool(cfg.get("responseLogprobs")),
        logprobs=cfg.get("logprobs"),
        mime=cfg.get("responseMimeType") or "text/plain",
        schema=schema,
        include_thoughts=include,
        thinking_budget=budget,
        thinking_level=level,
        seed=cfg.get("seed"),
        config=cfg,
    )
