"""`drillui serve`: the watch screen (and replays of chosen runs) in browsers, for the participants
of a screen-shared rehearsal.

textual-serve starts one process per browser tab; here that process is always a read-only
viewer (`drillui watch`, or `drillui replay` of a run the trainer listed), never a second drill.
Loopback by default. Binding any other address needs `--host` and prints a one-time access token:
the first page must carry it (`/?token=…`), then an HttpOnly cookie carries it to the websocket
and the assets; anything without it gets 403. Host headers that name neither loopback nor the
bound address are refused (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

from drillui.errors import UsageError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
COOKIE = "drillui_token"


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


class DrillServer(Server):
    """textual-serve with an access token, Host checks, URLs from the request, and one command
    per view (`/` watches, `/replay/<drill>/<run>` replays a listed run)."""

    def __init__(self, *, host: str, port: int, snapshots: Path, replays: dict[str, Path], settings_args: list[str],
                 token: str | None) -> None:
        self.snapshots = snapshots
        self.replays = replays
        self.token = token
        self.settings_args = settings_args
        base = [sys.executable, "-m", "drillui", *settings_args]
        watch = shlex.join([*base, "watch", "--snapshots", str(snapshots)])
        super().__init__(watch, host=host, port=port, title="drillui")
        self.base = base

    def command_for(self, view: str) -> str | None:
        if not view:
            return self.command
        path = self.replays.get(view)
        return shlex.join([*self.base, "replay", str(path)]) if path is not None else None

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._guard)
        app.router.add_get("/replay/{scenario}/{run}", self.handle_index, name="replay")
        app.router.add_get("/ws/replay/{scenario}/{run}", self.handle_websocket, name="replay-websocket")
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        host = (request.host or "").rsplit(":", 1)[0].strip("[]")
        if not (is_loopback(host) or host == self.host):
            return web.Response(status=403, text="drillui serve: unknown Host header\n")
        if self.token is None:
            return await handler(request)
        given = request.query.get("token")
        if given is not None:
            if not secrets.compare_digest(given, self.token):
                return web.Response(status=403, text="drillui serve: wrong token\n")
            # The token leaves the address bar: from now on the cookie carries it.
            response = web.HTTPFound(request.rel_url.with_query({k: v for k, v in request.query.items() if k != "token"}))
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
            raise response
        if not secrets.compare_digest(request.cookies.get(COOKIE, ""), self.token):
            return web.Response(status=403, text="drillui serve: open the address with ?token=… printed by drillui serve\n")
        return await handler(request)

    async def handle_index(self, request: web.Request) -> Any:  # type: ignore[override]
        view = ""
        if "scenario" in request.match_info:
            view = f"{request.match_info['scenario']}/{request.match_info['run']}"
            if view not in self.replays:
                raise web.HTTPNotFound(text=f"drillui serve: {view} is not one of the runs this server replays\n")
        # Addresses the browser can reach: the Host it used, not the address we bound.
        self.public_url = f"{request.scheme}://{request.host}"
        response = await super().handle_index(request)
        if view and isinstance(response, web.Response) and response.text:
            # The page's script appends ?width=&height= to this URL: the view goes in the path.
            response.text = response.text.replace('/ws"', f'/ws/replay/{view}"', 1)
        return response

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """textual-serve's own handler, with the command of the view asked for (never swapped on
        the shared server object: two tabs may connect at once)."""
        info = request.match_info
        view = f"{info['scenario']}/{info['run']}" if "scenario" in info else ""
        command = self.command_for(view)
        if command is None:
            raise web.HTTPNotFound(text="drillui serve: no such view\n")
        websocket = web.WebSocketResponse(heartbeat=15)
        width = to_int(request.query.get("width", "80"), 80)
        height = to_int(request.query.get("height", "24"), 24)
        app_service: AppService | None = None
        try:
            await websocket.prepare(request)

            async def close() -> None:
                await websocket.close()

            app_service = AppService(command, write_bytes=websocket.send_bytes, write_str=websocket.send_str,
                                     close=close, download_manager=self.download_manager, debug=self.debug)
            await app_service.start(width, height)
            try:
                await self._process_messages(websocket, app_service)
            finally:
                await app_service.stop()
        except asyncio.CancelledError:
            await websocket.close()
        finally:
            if app_service is not None:
                await app_service.stop()
        return websocket


def serve(*, host: str, port: int, snapshots: Path, replays: dict[str, Path], settings_args: list[str]) -> int:
    token = None if is_loopback(host) else secrets.token_urlsafe(18)
    server = DrillServer(host=host, port=port, snapshots=snapshots, replays=replays, settings_args=settings_args, token=token)
    shown = f"[{host}]" if ":" in host else host
    print(f"drillui serve: the watch screen on http://{shown}:{port}/" + (f"?token={token}" if token else ""), flush=True)
    for view in replays:
        print(f"  replay of {view}: http://{shown}:{port}/replay/{view}" + (f"?token={token}" if token else ""), flush=True)
    if token:
        print("  not loopback: the page needs the token above (once; a cookie keeps it)", flush=True)
    try:
        server.serve()
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint="choose another --port") from None
    return 0
