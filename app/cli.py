"""The `corral` command: serve, migrate, simulator, and admin tasks."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from app.settings import Settings


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from app import logs
    from app.main import create_app

    settings = Settings()
    logs.configure(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port if args.port is not None else settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


async def _with_database(settings: Settings) -> object:
    from app.db import create_engine, database_url, migrate

    engine = create_engine(database_url(settings), pool_size=2)
    await migrate(engine)
    return engine


def _migrate(args: argparse.Namespace) -> None:
    async def run() -> None:
        from sqlalchemy.ext.asyncio import AsyncEngine

        engine = await _with_database(Settings())
        assert isinstance(engine, AsyncEngine)
        await engine.dispose()

    asyncio.run(run())
    print("migrations at head")


def _simulator(args: argparse.Namespace) -> None:
    from app import logs
    from app.upstream.simulator.standalone import run_standalone

    logs.configure("INFO")
    key = args.key or os.environ.get("CORRAL_SIMULATOR_KEY") or os.environ.get("CSB_API_KEY")
    if not key:
        sys.exit("corral simulator needs --key (or CORRAL_SIMULATOR_KEY): it requires a bearer key")
    run_standalone(host=args.host, port=args.port, api_key=key)


def _admin(args: argparse.Namespace) -> None:
    async def run() -> dict[str, object]:
        from sqlalchemy.ext.asyncio import AsyncEngine

        from app.db import session_factory, transaction
        from app.identity import service as identity_service

        engine = await _with_database(Settings())
        assert isinstance(engine, AsyncEngine)
        try:
            async with transaction(session_factory(engine)) as session:
                if args.admin_command == "create-team":
                    team = await identity_service.create_team(
                        session, team_id=args.id, name=args.name or args.id
                    )
                    return {"id": team.id, "name": team.name}
                if args.admin_command == "create-admin-key":
                    issued = await identity_service.issue_key(
                        session, team_id=None, name=args.name, scopes=["admin"], is_admin=True
                    )
                    return {"id": issued.row.id, "key": issued.token}
                issued = await identity_service.issue_key(
                    session,
                    team_id=args.team,
                    name=args.name,
                    scopes=args.scopes.split(","),
                    owner=args.owner,
                )
                return {"id": issued.row.id, "team": args.team, "key": issued.token}
        finally:
            await engine.dispose()

    print(json.dumps(asyncio.run(run())))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="corral", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API and the reconciler")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_serve)

    commands.add_parser("migrate", help="bring the database schema to head").set_defaults(
        func=_migrate
    )

    simulator = commands.add_parser("simulator", help="run the upstream simulator standalone")
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument("--port", type=int, default=8900)
    simulator.add_argument("--key", help="the bearer key it requires")
    simulator.set_defaults(func=_simulator)

    admin = commands.add_parser("admin", help="administrative tasks on the database")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    team = admin_commands.add_parser("create-team")
    team.add_argument("id")
    team.add_argument("--name")
    key = admin_commands.add_parser("create-key")
    key.add_argument("team")
    key.add_argument("--name", default="cli")
    key.add_argument(
        "--scopes", default="sandboxes:read,sandboxes:write,sessions:read,sessions:write,usage:read"
    )
    key.add_argument("--owner")
    admin_key = admin_commands.add_parser("create-admin-key")
    admin_key.add_argument("--name", default="cli admin")
    admin.set_defaults(func=_admin)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
