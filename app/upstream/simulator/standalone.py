"""Runs the simulator as its own HTTP server (`corral simulator --port N`)."""

import uvicorn

from app.upstream.simulator.app import create_simulator_app
from app.upstream.simulator.config import SimulatorConfig


def run_standalone(
    *, host: str, port: int, api_key: str, config: SimulatorConfig | None = None
) -> None:
    if not api_key:
        # Like the upstream, the standalone simulator is useless without a key to check.
        raise ValueError("the simulator needs an API key to require from its callers")
    app = create_simulator_app(api_key=api_key, config=config)
    # No line per request: at benchmark rates the access log costs more than the simulator.
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
