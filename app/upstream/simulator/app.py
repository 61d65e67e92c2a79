"""`create_simulator_app`: the simulated upstream as one FastAPI application.

The same app serves in-process callers (through `httpx.ASGITransport`) and, via
`standalone.run_standalone`, callers over the network; nothing in it depends on which.
"""

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.upstream.simulator import control, envelope, routes
from app.upstream.simulator.config import SimulatorConfig
from app.upstream.simulator.errors import SimulatorError
from app.upstream.simulator.state import Simulator


def _is_control(path: str) -> bool:
    return path.startswith(control.CONTROL_PREFIX)


class RateLimitHeaders:
    """Adds the three `x-csb-*` limit header families to every upstream answer.

    The SDK only reads them on a 429, but the upstream sends them always; they are computed when
    the answer starts, so they reflect what the call itself did (a start is already counted).
    """

    def __init__(self, app: ASGIApp, *, simulator: Simulator) -> None:
        self.app = app
        self.simulator = simulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_control(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *self.simulator.rate_limit_headers()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _render_simulator_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SimulatorError)
    if _is_control(request.url.path):
        return envelope.raw({"detail": "; ".join(exc.messages)}, exc.status_code)
    return envelope.failure(exc.status_code, exc.messages)


async def _render_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if _is_control(request.url.path):
        return await http_exception_handler(request, exc)
    return envelope.failure(exc.status_code, [str(exc.detail)])


def create_simulator_app(*, api_key: str, config: SimulatorConfig | None = None) -> FastAPI:
    simulator = Simulator(config or SimulatorConfig(), api_key=api_key)
    app = FastAPI(
        title="CodeSandbox API simulator",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.simulator = simulator
    app.include_router(routes.router)
    app.include_router(control.router)
    app.add_exception_handler(SimulatorError, _render_simulator_error)
    app.add_exception_handler(StarletteHTTPException, _render_http_error)
    app.add_middleware(RateLimitHeaders, simulator=simulator)
    return app


def simulator_of(app: FastAPI) -> Simulator:
    """The typed state of an app made by `create_simulator_app`."""
    simulator: Simulator = app.state.simulator
    return simulator
