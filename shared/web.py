"""The HTTP edge every service shares: error bodies, a cap on request bodies,
bearer tokens, health, readiness and metrics. The only module of `shared` that
knows FastAPI."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from psycopg import DataError, OperationalError
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.db import ping
from shared.errors import AppError, InvalidToken

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests served", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds", "HTTP request latency", ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

_STATUS_CODES = {
    400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 411: "length_required",
    412: "precondition_failed", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "validation_error", 429: "too_many_requests", 503: "unavailable",
}


VERSION = "0.1.0"

# fastapi.routing's detail for a body json.loads cannot read at all (bad UTF-8, deep
# nesting, a number too long for int)
BODY_PARSE_ERROR = "There was an error parsing the body"


def error_response(status: int, code: str, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every 4xx/5xx body becomes `{"error": code, "detail": ...}`."""

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # never echo the input (secrets such as passwords); a body that is not UTF-8 text
        # (bytes in the error's context) is shown with replacement characters, never a 500
        errors = [{k: v for k, v in err.items() if k != "input"} for err in exc.errors()]
        errors = jsonable_encoder(
            errors, custom_encoder={Exception: str, bytes: lambda raw: raw.decode("utf-8", "replace")}
        )
        return error_response(422, "validation_error", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
            # the same 422 as any other body that is not a JSON object
            return error_response(422, "validation_error", "the body is not a readable JSON object")
        code = _STATUS_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_away(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return error_response(503, "unavailable", "the database is unavailable; retry shortly", {"Retry-After": "1"})

    @app.exception_handler(DataError)
    async def _unstorable(_: Request, exc: Exception) -> JSONResponse:
        # e.g. a lone surrogate that got past validation: the client's input, never a 500
        return error_response(422, "validation_error", "the request holds characters we cannot store")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


MAX_BODY_BYTES = 1024 * 1024
BODY_TOO_LARGE = f"the request body is larger than {MAX_BODY_BYTES} bytes"


class BodyLimit:
    """A cap on request bodies: every body our APIs accept is a few hundred bytes, so
    one of more than `max_bytes` is refused with 413 before it is read into memory,
    by its Content-Length or, for a streamed body, as soon as the bytes received pass
    the cap."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False  # the server refuses a malformed length itself
                if too_big:
                    return await self._refuse(send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # turned into the JSON 413 by the error handlers
                    raise StarletteHTTPException(413, BODY_TOO_LARGE)
            return message

        return await self.app(scope, limited, send)

    @staticmethod
    async def _refuse(send) -> None:
        body = json.dumps({"error": "payload_too_large", "detail": BODY_TOO_LARGE}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def bearer_token(request: Request) -> str:
    """The token of an `Authorization: Bearer <token>` header, or 401 invalid_token."""
    header = request.headers.get("authorization")
    if not header:
        raise InvalidToken("missing bearer token")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidToken("the Authorization header must be 'Bearer <token>'")
    return token


class MetricsMiddleware:
    """Counts requests and observes latency per route template (pure ASGI, cheap)."""

    def __init__(self, app, service: str):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def _send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(self.service, scope["method"], template, str(status)).inc()
            HTTP_LATENCY.labels(self.service, template).observe(time.perf_counter() - start)


Check = Callable[[], Awaitable[bool]]


def create_service_app(
    *,
    service: str,
    title: str,
    description: str,
    lifespan,
    resources: Callable[[FastAPI], tuple[object, object]],
    inner_middleware: tuple[type, ...] = (),
) -> FastAPI:
    """A service's FastAPI app with everything every service shares: the error
    bodies, `inner_middleware` (closest to the routes), the body cap, metrics,
    `/healthz`, and `/readyz` checking the database pool and the NATS link that
    `resources(app)` returns once the lifespan has opened them."""
    app = FastAPI(title=title, version=VERSION, description=description, lifespan=lifespan)
    install_error_handlers(app)
    for middleware in inner_middleware:
        app.add_middleware(middleware)

    async def database() -> bool:
        return await ping(resources(app)[0])

    async def nats() -> bool:
        return await resources(app)[1].ping()

    add_ops_routes(app, service, {"database": database, "nats": nats})
    return app


def add_ops_routes(app: FastAPI, service: str, checks: dict[str, Check]) -> None:
    """`/healthz` (alive), `/readyz` (every check passes) and `/metrics`; the
    body cap and the metrics middleware (added last: outermost)."""
    app.add_middleware(BodyLimit)
    app.add_middleware(MetricsMiddleware, service=service)

    @app.get("/healthz", tags=["ops"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="The database and NATS are reachable")
    async def readyz() -> JSONResponse:
        results = {name: await check() for name, check in checks.items()}
        if all(results.values()):
            return JSONResponse({"status": "ready", "checks": results})
        failing = ", ".join(name for name, ok in results.items() if not ok)
        return JSONResponse(
            {"error": "not_ready", "detail": f"not reachable: {failing}", "checks": results}, status_code=503
        )

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
