"""Running the official SDK against a real Corral: the app served by uvicorn on a loopback
port (in this process, on the test's runtime and simulator), and Node scripts from
tests/node run with `CSB_BASE_URL=<corral>/csb` and `CSB_API_KEY=<a Corral key>`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn

from app.main import create_app
from app.runtime import Runtime
from tests.processes import free_port

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
SCRIPT_TIMEOUT_SECONDS = 120


@asynccontextmanager
async def serve(runtime: Runtime) -> AsyncIterator[str]:
    """Corral on 127.0.0.1:<free port> until the context ends; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(runtime=runtime),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        ws="none",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what made it stop
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def node_ready() -> None:
    """The test command installs the pinned SDK (`npm ci` in tests/node); say so if it did not."""
    if shutil.which("node") is None:
        raise RuntimeError("node is not on PATH; the SDK tests need Node.js")
    if not (NODE_DIR / "node_modules" / "@codesandbox" / "sdk" / "package.json").exists():
        raise RuntimeError("the SDK is not installed: run `npm ci` in tests/node (make test does)")


async def run_script(script: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Run a tests/node script; returns its JSON summary, failing with its output if it failed."""
    node_ready()
    process = await asyncio.create_subprocess_exec(
        "node",
        script,
        cwd=NODE_DIR,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), SCRIPT_TIMEOUT_SECONDS)
    lines = stdout.decode().strip().splitlines()
    summary: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    assert process.returncode == 0 and summary.get("ok") is True, (
        f"{script} exited {process.returncode}\nstdout:\n{stdout.decode()[-4000:]}\n"
        f"stderr:\n{stderr.decode()[-4000:]}"
    )
    return summary
