"""Real processes on loopback for multi-replica tests: a standalone simulator and Corral
replicas (`corral serve`), each stopped when its context ends, even when the test fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CORRAL = str(Path(sys.executable).with_name("corral"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    url: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """Die the hard way, as a crashed replica would (no graceful shutdown)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)


def _wait_ready(process: Process, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"process exited early:\n{process.output()[-4000:]}")
        try:
            if httpx.get(process.url + path, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{process.url} not ready:\n{process.output()[-4000:]}")


@contextmanager
def _spawn(
    args: list[str], env: Mapping[str, str], port: int, ready: str, log: Path
) -> Iterator[Process]:
    handle = log.open("wb")
    popen = subprocess.Popen(
        args, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT
    )
    process = Process(url=f"http://127.0.0.1:{port}", popen=popen, log=log)
    try:
        _wait_ready(process, ready)
        yield process
    finally:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=10)
        handle.close()


@contextmanager
def simulator(key: str, log_dir: Path) -> Iterator[Process]:
    port = free_port()
    args = [CORRAL, "simulator", "--port", str(port), "--key", key]
    with _spawn(args, {}, port, "/_simulator/config", log_dir / f"simulator-{port}.log") as p:
        yield p


# The hourly meter of upstream work (app/metering.py) out of the way, for runs that measure
# something else (throughput, latency) and send more forks and starts in minutes than a key
# may in an hour.
UNMETERED = {
    f"{scope}_hourly_{kind}": "1000000"
    for scope in ("team", "key")
    for kind in ("forks", "starts", "sessions")
}


@contextmanager
def corral(
    *,
    database_url: str,
    upstream_url: str,
    upstream_key: str,
    admin_key: str,
    log_dir: Path,
    **settings: str,
) -> Iterator[Process]:
    port = free_port()
    env = {
        "CORRAL_DATABASE_URL": database_url,
        # A standalone simulator: Corral's clock follows it (POST /v1/admin/clock/advance).
        "CORRAL_UPSTREAM": "simulator",
        "CORRAL_UPSTREAM_URL": upstream_url,
        "CORRAL_UPSTREAM_KEY": upstream_key,
        "CORRAL_ADMIN_KEY": admin_key,
        "CORRAL_PORT": str(port),
        "CORRAL_RECONCILE_ENABLED": "false",
        **{f"CORRAL_{name.upper()}": value for name, value in settings.items()},
    }
    with _spawn([CORRAL, "serve"], env, port, "/healthz", log_dir / f"corral-{port}.log") as p:
        yield p
