"""Wiring: the gRPC server with AuthService, health and reflection, and the `serve` lifecycle."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from authsvc import migrations
from authsvc.clock import MICROS_PER_SECOND, Clock, system_clock
from authsvc.config import Settings
from authsvc.database import database_url
from authsvc.interceptors import ErrorInterceptor
from authsvc.servicer import AuthServicer
from authsvc.state import State
from authsvc.store import Store, create_pool
from authsvc.v1 import auth_service_pb2, auth_service_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name


@dataclass
class RunningServer:
    """A started gRPC server and the port it listens on."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer

    async def stop(self, grace: float | None) -> None:
        """Marks the service NOT_SERVING, then stops, letting calls in flight finish within `grace`."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(store: Store, state: State, settings: Settings, clock: Clock = system_clock) -> RunningServer:
    """Starts a gRPC server on settings.host:settings.port serving AuthService, health and reflection."""
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(store, state, settings, clock), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health)


async def open_store(url: str, settings: Settings) -> tuple[asyncpg.Pool, Store]:
    """Migrates the database at `url` and returns a pool and the store over it."""
    pool = await create_pool(url, max_size=settings.database_pool_size, command_timeout=settings.database_timeout)
    async with pool.acquire() as conn:
        for version in await migrations.apply(conn):
            log.info("database migrated to %s", version)
    return pool, Store(pool, acquire_timeout=settings.database_timeout)


def new_state(store: Store, url: str, settings: Settings) -> State:
    """The in-memory verification state of this process, following the database at `url`."""
    return State(
        store,
        url,
        max_staleness=settings.max_staleness,
        check_interval=settings.state_check_interval,
        leeway=round(settings.clock_leeway * MICROS_PER_SECOND),
    )


async def _serve(url: str, settings: Settings) -> None:
    pool, store = await open_store(url, settings)
    state = new_state(store, url, settings)
    try:
        await state.start()
        for app in state.apps():
            if app.auth_checks_disabled:
                log.warning(
                    "app %s (%s) has auth checks disabled: it accepts developer tokens; never use it in production",
                    app.api_key,
                    app.name,
                )
        running = await start_server(store, state, settings)
        log.info("authsvc serving gRPC on %s:%d", settings.host, running.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping: letting calls in flight finish within %.0fs", settings.shutdown_grace)
        await running.stop(settings.shutdown_grace)
    finally:
        await state.stop()
        await pool.close()
    log.info("authsvc stopped")


def serve(settings: Settings) -> None:
    """Runs the service until SIGINT or SIGTERM, with the embedded PostgreSQL when no URL is set."""
    with database_url(settings) as url:
        asyncio.run(_serve(url, settings))
