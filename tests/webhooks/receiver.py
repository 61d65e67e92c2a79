"""A webhook receiver for tests and benchmarks: a real HTTP server, in its own process, that
verifies every request with the `standardwebhooks` library (what a customer's receiver would
use) and appends one JSON line per request to a log, as the request arrives.

    python tests/webhooks/receiver.py --port N --secret whsec_... [--secret whsec_...] \\
        --log FILE [--status 200] [--delay 0]

What a path answers:

    /ok      200
    /slow    200 after --slow-delay seconds (default 2)
    /fail    500
    /gone    410
    /busy    503 with Retry-After: --retry-after (default 120)
    /healthz 200, not logged (readiness)
    other    --status after --delay seconds

The query parameters `status`, `delay` and `retry_after` override what any path does, and
`location` adds a Location header, so each endpoint of a test can have its own behaviour on one
receiver. A log line holds `id` (the
webhook-id), `type`, `verified` (some secret verifies), `verified_with` (one boolean per
--secret, in order), `signatures` (how many the request carried), `path`, `status` (the answer)
and `received_at` (wall clock, seconds since the epoch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

ROUTES: dict[str, tuple[int, float | None]] = {
    # path: (status, delay; None: --slow-delay)
    "/ok": (200, 0.0),
    "/slow": (200, None),
    "/fail": (500, 0.0),
    "/gone": (410, 0.0),
    "/busy": (503, 0.0),
}


def build_app(args: argparse.Namespace, log: TextIO) -> Any:
    from standardwebhooks import Webhook, WebhookVerificationError
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    verifiers = [Webhook(secret) for secret in args.secret]

    def verifies(verifier: Webhook, body: bytes, headers: dict[str, str]) -> bool:
        try:
            verifier.verify(body, headers)
        except (WebhookVerificationError, ValueError):
            return False
        return True

    async def receive(request: Request) -> PlainTextResponse:
        path = request.url.path
        if path == "/healthz":
            return PlainTextResponse("ok")
        received_at = time.time()
        body = await request.body()
        headers = dict(request.headers)
        status, delay = ROUTES.get(path, (args.status, args.delay))
        delay = args.slow_delay if delay is None else delay
        query = request.query_params
        status = int(query.get("status", status))
        delay = float(query.get("delay", delay))
        retry_after = query.get("retry_after", str(args.retry_after) if path == "/busy" else None)
        verified_with = [verifies(v, body, headers) for v in verifiers]
        try:
            event_type = json.loads(body).get("type")
        except (ValueError, AttributeError):
            event_type = None
        line = {
            "id": headers.get("webhook-id"),
            "type": event_type,
            "verified": any(verified_with),
            "verified_with": verified_with,
            "signatures": len(headers.get("webhook-signature", "").split()),
            "user_agent": headers.get("user-agent"),
            "content_type": headers.get("content-type"),
            "path": path,
            "status": status,
            "received_at": received_at,
        }
        log.write(json.dumps(line) + "\n")
        if delay > 0:
            await asyncio.sleep(delay)
        answer_headers = {"Retry-After": retry_after} if retry_after is not None else {}
        if "location" in query:
            answer_headers["Location"] = query["location"]
        return PlainTextResponse(str(status), status_code=status, headers=answer_headers)

    methods = ["GET", "POST", "PUT"]
    return Starlette(
        routes=[Route("/{path:path}", receive, methods=methods)],
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", action="append", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--slow-delay", type=float, default=2.0)
    parser.add_argument("--retry-after", default="120")
    args = parser.parse_args()
    # Line-buffered: a reader sees every request as soon as it arrived.
    with Path(args.log).open("a", buffering=1) as log:
        uvicorn.run(
            build_app(args, log),
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            access_log=False,
            # Requests held by a slow path are not waited for when the receiver is stopped.
            timeout_graceful_shutdown=1,
        )


@dataclass
class Receiver:
    """A running receiver process, for the tests and benchmarks that start one."""

    url: str
    log: Path
    pid: int

    def requests(self) -> list[dict[str, Any]]:
        """Every request logged so far (a line still being written is left for later)."""
        if not self.log.exists():
            return []
        text = self.log.read_text()
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def ids(self) -> list[str]:
        return [r["id"] for r in self.requests()]


@contextmanager
def running(secrets: list[str], log_dir: Path, *options: str) -> Iterator[Receiver]:
    """Start a receiver on a free loopback port; stopped when the block ends."""
    import sys

    from tests import processes

    port = processes.free_port()
    log = log_dir / f"receiver-{port}.jsonl"
    args = [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--log", str(log)]
    for secret in secrets:
        args += ["--secret", secret]
    output = log_dir / f"receiver-{port}.out"
    with processes._spawn([*args, *options], {}, port, "/healthz", output) as process:
        yield Receiver(url=process.url, log=log, pid=process.popen.pid)


if __name__ == "__main__":
    main()
