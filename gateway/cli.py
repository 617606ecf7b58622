"""The `mailgw` command: api, worker, all, migrate, bootstrap, config and operator helpers."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import orjson
from aiohttp import web

from gateway import cli_ops
from gateway.config import Settings, SettingsError, load_settings
from gateway.db.migrate import migrate
from gateway.logging import configure, get_logger
from gateway.runtime import tune_gc

log = get_logger(__name__)


async def serve_api(settings: Settings, stop: asyncio.Event) -> None:
    from gateway.api.app import create_app

    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    log.info("api_listening", host=settings.http_host, port=settings.http_port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def run_all(settings: Settings, roles: list[str], with_api: bool) -> None:
    from consumers.runner import run_roles

    stop = asyncio.Event()
    await migrate(settings.database_url)
    tune_gc()
    tasks = []
    if roles:
        tasks.append(asyncio.create_task(run_roles(settings, roles, stop)))
    if with_api:
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        tasks.append(asyncio.create_task(serve_api(settings, stop)))
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def bootstrap(settings: Settings, as_json: bool) -> int:
    from gateway.db import workspaces as db
    from gateway.db.pool import connect

    await migrate(settings.database_url)
    conn = await connect(settings.database_url)
    try:
        async with conn.transaction():
            # Serialise concurrent bootstraps: only one may create the first key.
            await conn.execute("SELECT pg_advisory_xact_lock(7236520001)")
            if await db.any_platform_key(conn):
                msg = "A platform key already exists; nothing to do."
                print(orjson.dumps({"created": False, "message": msg}).decode() if as_json else msg)
                return 0
            operator = await db.create_operator(conn)
            key, _ = await db.insert_key(
                conn, kind="platform", operator_id=operator, workspace_id=None, name="bootstrap"
            )
    finally:
        await conn.close()
    if as_json:
        print(orjson.dumps({"created": True, "key": key}).decode())
    else:
        print("Created the first platform key. It is shown once; store it now:")
        print(key)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailgw", description=__doc__)
    parser.add_argument("--config", help="env file with MAILGW_* settings")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="run the HTTP API")
    worker = sub.add_parser("worker", help="run one or more consumer roles")
    worker.add_argument("roles", nargs="+", metavar="NAME")
    sub.add_parser("all", help="run the API and every role in one process")
    sub.add_parser("migrate", help="apply database migrations")
    boot = sub.add_parser("bootstrap", help="create the first platform key (printed once)")
    boot.add_argument("--json", action="store_true")
    sub.add_parser("config", help="print the effective settings, secrets masked")
    cli_ops.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"mailgw: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_format, settings.log_level)
    command = args.command
    if command == "config":
        print(orjson.dumps(settings.masked(), option=orjson.OPT_INDENT_2).decode())
        return 0
    if command == "migrate":
        applied = asyncio.run(migrate(settings.database_url))
        print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
        return 0
    if command == "bootstrap":
        return asyncio.run(bootstrap(settings, args.json))
    if command == "api":
        asyncio.run(run_all(settings, [], with_api=True))
        return 0
    if command == "worker":
        from consumers.runner import ROLES

        unknown = [r for r in args.roles if r not in ROLES]
        if unknown:
            print(f"mailgw: unknown role(s) {', '.join(unknown)}; choose from {', '.join(ROLES)}",
                  file=sys.stderr)
            return 2
        asyncio.run(run_all(settings, list(args.roles), with_api=False))
        return 0
    if command == "all":
        from consumers.runner import ROLES

        asyncio.run(run_all(settings, list(ROLES), with_api=True))
        return 0
    return cli_ops.dispatch(args, settings)


if __name__ == "__main__":
    sys.exit(main())
