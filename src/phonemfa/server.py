"""`phonemfa serve`: the service in the foreground (ARI connection + HTTP API).

SIGTERM or SIGINT: stop taking new calls (POST answers 503), let calls in progress finish
within `shutdown.grace_period`, end the rest as `interrupted`, then exit. The HTTP API keeps
answering reads during the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from phonemfa import logsetup, retention
from phonemfa.api import build_app
from phonemfa.app_owner import AppTaken
from phonemfa.config import Config, ConfigError, load_config
from phonemfa.prompt_setup import PromptSetupError
from phonemfa.service import CallService
from phonemfa.startup import (
    OPEN_FILES_ENOUGH,
    StartupError,
    cli_calls_running,
    hold_serve_lock,
    open_service,
    raise_open_files_limit,
    start_service,
)
from phonemfa.store import StoreUnavailable

log = logging.getLogger("phonemfa.server")

# How often a running service looks for calls left in progress by a killed `phonemfa call`.
CLI_SWEEP = 10.0


def add_serve_command(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the service (ARI connection + HTTP API) in the foreground",
        description="Run phonemfa: connect to Asterisk's ARI, serve the HTTP API. "
        "SIGTERM drains calls in progress (shutdown.grace_period) before exiting.",
    )
    p.add_argument("--config", "-c", metavar="FILE", required=True)
    p.set_defaults(handler=run_serve_command)


def run_serve_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"phonemfa serve: {exc}", file=sys.stderr)
        return 1
    logsetup.configure(config.logging.level, config.logging.format)
    open_files = raise_open_files_limit()
    if open_files < OPEN_FILES_ENOUGH:
        log.warning(
            "open files limited to %d: API clients and ARI requests beyond that many"
            " are refused; raise it (systemd: LimitNOFILE=65536)",
            open_files,
        )
    try:
        _run(serve(config, freeze_heap=True))
    except PromptSetupError as exc:
        log.error("cannot serve: %s", exc.located(args.config))
        return 1
    except StartupError as exc:  # e.g. port taken
        log.error("cannot serve: %s", exc.located(args.config))
        return 1
    except (OSError, AppTaken) as exc:
        log.error("cannot serve: %s", exc)
        return 1
    return 0


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run the service on uvloop (libuv's event loop) where it is installed: the same
    asyncio API for about an eighth less CPU per call (`make bench`), most of it in the loop's
    own bookkeeping and socket calls. asyncio's own loop where uvloop is not installed; the
    start-up line says which loop runs."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


async def _listen(runner: web.AppRunner, config: Config) -> None:
    """Serve the API at api.listen; an address that cannot be had names that field (a host
    that does not resolve said only "Name or service not known")."""
    site = web.TCPSite(runner, config.api.host, config.api.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise StartupError("api.listen", f"cannot listen on {config.api.listen}: {why}") from exc


async def serve(
    config: Config, ready: asyncio.Event | None = None, *, freeze_heap: bool = False
) -> None:
    # Before the database is opened (and migrated) or any call in it settled.
    lock = hold_serve_lock(config.storage.path)
    service = await open_service(config, holding=lock)
    store = service.store
    runner: web.AppRunner | None = None
    sweeper: asyncio.Task[None] | None = None
    purger: asyncio.Task[None] | None = None  # storage.retention_days
    served = False
    try:
        # start() first: the API must not answer before the stored tenant settings and
        # blocks are loaded. A second phonemfa on our ARI app is refused there (app_owner).
        with cli_calls_running(config.storage.path) as cli_running:
            await start_service(service, leave_cli_calls=cli_running)
        runner = web.AppRunner(build_app(service), access_log=None, handle_signals=False)
        await runner.setup()
        await _listen(runner, config)
        if freeze_heap:
            # What start-up made (modules, phone number metadata, config: ~56,000 objects)
            # lives as long as the process: kept out of the collector's full passes, each
            # stalls the event loop 2.6x less (48 ms against 125 ms at 2000 calls in flight,
            # `make bench`). Not in a test process, whose services come and go.
            gc.collect()
            gc.freeze()
        log.info(
            "phonemfa listening on http://%s:%d (ARI %s, app %s; event loop: %s)",
            config.api.host,
            config.api.port,
            config.ari.url,
            config.ari.app,
            type(asyncio.get_running_loop()).__module__.partition(".")[0],  # uvloop, asyncio
        )
        sweeper = asyncio.create_task(_settle_dead_cli_calls(service, config.storage.path))
        if config.storage.retention_days is not None:
            purger = asyncio.create_task(retention.keep_for(store, config.storage.retention_days))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        served = True
        await stop.wait()
        for task in (sweeper, purger):  # before the engine and the store go: they use them
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        log.info("stopping: no new calls; draining calls in progress")
        await service.shutdown()
    finally:
        for task in (sweeper, purger):
            if task is not None:
                task.cancel()
        if not served:  # refused to start: close what start() opened (ARI, webhooks)
            await service.webhooks.stop()
            await service.engine.stop()
        if runner is not None:
            await runner.cleanup()
        await store.close()
        lock.close()
        if served:
            log.info("stopped")


async def _settle_dead_cli_calls(service: CallService, database: Path) -> None:
    """A `phonemfa call --config` killed mid-call leaves its call in progress on record: a
    starting service settles it, and a running one does every CLI_SWEEP seconds while no
    CLI call runs on its database (startup.cli_calls_running). Each time, the blocks a CLI
    put on record are read too (CallService.read_blocks)."""
    while True:
        await asyncio.sleep(CLI_SWEEP)
        if not service.store.healthy:  # a write that fails says so; only one that holds says
            try:  # it can write again, and none may come while /healthz drains us
                await service.store.probe()
                log.info("the call store can write again")
            except StoreUnavailable:
                pass  # said when it failed
        try:
            await service.read_blocks()
        except StoreUnavailable as exc:  # next time
            log.warning("cannot read the blocks on record: %s", exc)
        except Exception:  # a bug: said, and the sweeps go on
            log.exception("reading the blocks on record failed")
        try:
            with cli_calls_running(database) as running:
                # Only the store's reading and writing under the lock, a CLI waits for it:
                # while the store cannot write, nothing is settled (next time).
                if not running and service.store.healthy:
                    await service.settle_dead_cli_calls()
        except (StartupError, StoreUnavailable, OSError) as exc:  # next time
            log.warning("cannot look for calls of a phonemfa call that ended: %s", exc)
        except Exception:  # a bug: said, and the sweeps go on
            log.exception("looking for calls of a phonemfa call that ended failed")
