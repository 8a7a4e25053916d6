"""One small exception hierarchy; each error knows its OpenAI error type and HTTP status.

Everything a client can see goes through :meth:`GatewayError.body`, so the error envelope
is always ``{"error": {"message", "type", "param", "code"}}`` with all four keys present.
"""

from __future__ import annotations

import msgspec

_encode = msgspec.json.encode


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        upstream_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = headers or {}  # sent to the client (e.g. retry-after)
        self.upstream_headers = upstream_headers or {}  # for the router only, never sent

    def body(self) -> bytes:
        return _encode(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    code = "unsupported_media_type"


class RequestTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class NotFound(InvalidRequest):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(InvalidRequest):
    status = 405
    code = "method_not_allowed"


class AuthenticationError(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class NotImplementedByGateway(GatewayError):
    status = 501
    type = "server_error"
    code = "protocol_not_implemented"


class UpstreamError(GatewayError):
    """An upstream vendor answered with an error, or could not be reached."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    status = 502
    code = "upstream_unavailable"


class StreamInterrupted(UpstreamError):
    """The upstream stream ended before it was complete (after the 200 was sent)."""

    code = "upstream_stream_interrupted"
