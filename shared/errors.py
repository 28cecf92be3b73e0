"""Our own exception types.

Code below the HTTP edge raises these; `shared.web` turns them into the
contract's JSON error bodies. Each category carries its HTTP status so the edge
needs no table, but nothing here imports a web framework.
"""

from __future__ import annotations


class AppError(Exception):
    """Base of every error a client may cause. `code` is the machine code."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.headers = headers or {}


class InvalidInput(AppError):
    status = 422
    code = "validation_error"


class InvalidToken(AppError):
    status = 401
    code = "invalid_token"

    def __init__(self, detail: str = "the token is missing, malformed, expired or revoked", **kw):
        kw.setdefault("headers", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        super().__init__(detail, **kw)


class Unauthenticated(AppError):
    status = 401
    code = "unauthenticated"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class PreconditionFailed(AppError):
    status = 412
    code = "precondition_failed"


class TooManyRequests(AppError):
    status = 429
    code = "too_many_attempts"


class Unavailable(AppError):
    status = 503
    code = "unavailable"
