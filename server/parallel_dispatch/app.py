"""The ASGI application for the streamable HTTP transport: /mcp, /healthz and bearer auth."""

from __future__ import annotations

import hmac
from typing import Any

from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from parallel_dispatch import __version__
from parallel_dispatch.settings import Settings

UNPROTECTED_PATHS = frozenset({"/healthz"})


class BearerAuth:
    """Rejects requests without `Authorization: Bearer <token>` (except /healthz)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") not in UNPROTECTED_PATHS:
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                response = JSONResponse(
                    {"error": "unauthorized: send Authorization: Bearer <token>"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)


def create_app(settings: Settings, server: MCPServer[Any]) -> ASGIApp:
    """Streamable HTTP at /mcp plus GET /healthz; bearer auth when a token is set."""

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    server.custom_route("/healthz", methods=["GET"])(healthz)

    app: ASGIApp = server.streamable_http_app(host=settings.host)
    if settings.auth_token is not None:
        app = BearerAuth(app, settings.auth_token.get_secret_value())
    return app
