"""Each service's HTTP surface: liveness, readiness, Prometheus metrics, and its own routes.

Served by uvicorn inside the service's event loop, beside the broker. It is handed what its
standard routes read (the service's name, its pool, its readiness and dead-letter view, its
gauges and metrics registry: shared/operations.py, shared/metrics.py) and knows nothing of the
runtime that composes them (shared/runtime.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any

import aio_pika
import asyncpg
import uvicorn
from fastapi import FastAPI, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared.identity import OPERATOR, PUBLIC, ROLES, Access, AccessControl, RouteKey, allow

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"intake": 8081, "quality_monitor": 8082, "escalation": 8083, "notification": 8084,
                 "workspace": 8085}


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the FastStream app owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpSurface:
    """One service's FastAPI app, served beside its broker (``start``, ``stop``)."""

    def __init__(self, name: str, *, pool: Callable[[], asyncpg.Pool],
                 readiness: Callable[[], Awaitable[dict[str, bool]]],
                 dead_letters: Callable[[int], Awaitable[dict[str, Any]]],
                 refresh_gauges: Callable[[], Awaitable[None]],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self._readiness = readiness
        self._dead_letters = dead_letters
        self._refresh_gauges = refresh_gauges
        self._registry = registry
        # /docs and /redoc are added by _add_docs_routes, with their assets served from here.
        self.api = FastAPI(title=f"carewatch {name}", version="1.0.0",
                           docs_url=None, redoc_url=None, openapi_url="/openapi.json")
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None
        # Who may use each route, (METHOD, path) -> Access: every route of the app is checked
        # against this table (shared/identity.py); a route missing from it is refused to all.
        self.access: dict[RouteKey, Access] = {
            ("GET", "/health"): PUBLIC,
            ("GET", "/"): allow(*ROLES),
            ("GET", "/ready"): allow(OPERATOR),
            ("GET", "/metrics"): allow(OPERATOR),
            ("GET", "/v1/dead-letters"): allow(OPERATOR),
            ("GET", "/docs"): allow(*ROLES),
            ("GET", "/docs/oauth2-redirect"): allow(*ROLES),
            ("GET", "/openapi.json"): allow(*ROLES),
            ("GET", "/redoc"): allow(*ROLES),
            ("GET", "/docs-assets"): allow(*ROLES),  # the docs pages' scripts and styles
        }
        self.api.add_middleware(AccessControl, access=self.access, pool=pool)
        self._add_standard_routes()

    def declare(self, access: dict[RouteKey, Access]) -> None:
        """Add a service's route table (its one visible place saying who may use what)."""
        self.access.update(access)

    def without_index(self) -> None:
        """For a service whose ``/`` is its own page (the workspace's overview, for people)."""
        self.api.router.routes[:] = [
            r for r in self.api.router.routes
            if not (getattr(r, "path", None) == "/" and getattr(r, "name", None) == "index")]

    def _add_standard_routes(self) -> None:
        name = self.name
        self._add_docs_routes()

        @self.api.get("/", tags=["operations"], summary="What this service serves")
        async def index() -> dict[str, str]:
            return {"service": name, "health": "/health", "ready": "/ready",
                    "metrics": "/metrics", "docs": "/docs", "redoc": "/redoc",
                    "openapi": "/openapi.json"}

        @self.api.get("/health", tags=["operations"], summary="Liveness: the process is up")
        async def health() -> dict[str, str]:
            return {"status": "ok", "service": name}

        @self.api.get("/ready", tags=["operations"],
                      summary="Readiness: broker connected, database reachable, consuming")
        async def ready() -> JSONResponse:
            checks = await self._readiness()
            ok = all(checks.values())
            return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

        @self.api.get("/v1/dead-letters", tags=["operations"],
                      summary="This service's dead-letter queues: depth, messages and why")
        async def dead_letters(limit: Annotated[int, Query(ge=0, le=100)] = 20
                               ) -> dict[str, Any]:
            """Each dead-letter queue of this service with its depth and its first ``limit``
            messages (peeked, not consumed): id, event type, the broker's reason and the
            errors the consumer recorded. Bodies are never shown (they may hold personal
            data); ``carewatch dlq replay`` sends messages back once the cause is fixed."""
            try:
                return await self._dead_letters(limit)
            except (OSError, aio_pika.exceptions.AMQPError) as exc:
                raise HTTPException(503, f"{name} could not read the broker:"
                                         f" {type(exc).__name__}") from exc

        @self.api.get("/metrics", tags=["operations"], summary="Prometheus metrics")
        async def metrics() -> Response:
            await self._refresh_gauges()
            return Response(generate_latest(self._registry),
                            media_type=CONTENT_TYPE_LATEST)

    def _add_docs_routes(self) -> None:
        """Swagger UI at /docs and ReDoc at /redoc, their scripts and styles served by the
        service itself (pinned in the fastapi-offline package), so they work offline."""
        from importlib.resources import files

        from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
        from fastapi.responses import HTMLResponse
        from fastapi.staticfiles import StaticFiles

        assets = "/docs-assets"
        self.api.mount(assets, StaticFiles(directory=str(files("fastapi_offline") / "static")),
                       name="docs-assets")
        title = self.api.title

        @self.api.get("/docs", include_in_schema=False)
        async def swagger_ui() -> HTMLResponse:
            return get_swagger_ui_html(
                openapi_url="/openapi.json", title=f"{title}: API",
                swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                swagger_css_url=f"{assets}/swagger-ui.css",
                swagger_favicon_url=f"{assets}/favicon.png")

        @self.api.get("/redoc", include_in_schema=False)
        async def redoc() -> HTMLResponse:
            return get_redoc_html(openapi_url="/openapi.json", title=f"{title}: API",
                                  redoc_js_url=f"{assets}/redoc.standalone.js",
                                  redoc_favicon_url=f"{assets}/favicon.png",
                                  with_google_fonts=False)

    async def start(self, host: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.api, log_level="warning", lifespan="off",
                                access_log=False)
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]),
                                         name=f"{self.name}-http")
        log.info("%s HTTP on http://%s:%d (health, ready, metrics)", self.name, host,
                 self.port)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
        self._server = self._task = None
