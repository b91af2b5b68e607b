"""Build and run the gateway's grpc.aio server."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from callqc import telemetry
from callqc.gateway.review_servicer import ReviewServicer
from callqc.gateway.security import GatewaySecurity, server_transport
from callqc.gateway.servicer import CallQCServicer
from callqc.settings import Settings, load_settings
from callqc.storage import ObjectStore, open_store
from callqc.v1 import callqc_pb2_grpc as pb_grpc
from callqc.v1 import review_pb2_grpc

log = logging.getLogger(__name__)


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    limit = settings.gateway.max_message_bytes
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
    ]


async def start_server(settings: Settings, store: ObjectStore | None = None) -> tuple[grpc.aio.Server, int]:
    """Start serving; returns the server and the bound port (port 0 in settings = pick a free one)."""
    store = store or open_store(settings)
    security = GatewaySecurity.from_settings(settings, store)
    credentials = server_transport(settings)
    server = grpc.aio.server(options=grpc_options(settings), interceptors=[security.interceptor(settings)])
    servicer = CallQCServicer(settings, store, security)
    pb_grpc.add_CallQCServicer_to_server(servicer, server)
    review_pb2_grpc.add_ReviewServicer_to_server(ReviewServicer(settings, store, security), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{settings.gateway.host}:{settings.gateway.port}"
    port = server.add_secure_port(address, credentials)
    await server.start()
    servicer.backlog.start()
    await health_servicer.set("callqc.v1.CallQC", health_pb2.HealthCheckResponse.SERVING)
    log.info("callqc gateway listening on %s:%d (%s)", settings.gateway.host, port, settings.gateway.tls_mode)
    return server, port


async def serve_forever(settings: Settings) -> None:
    telemetry.configure("callqc-gateway", settings.telemetry, settings.telemetry.gateway_metrics_port)
    server, _port = await start_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=5)
    for task in asyncio.all_tasks():  # background work of the servicer (backlog monitor)
        if task is not asyncio.current_task():
            task.cancel()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve_forever(load_settings()))
