"""Shared integration fixtures: the real gateway on a loopback socket (see test_gateway.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import grpc
import pytest

from callqc.client import CallQCClient, ClientAuth
from callqc.gateway.server import start_server
from callqc.jobs import JobStore
from callqc.settings import Settings
from callqc.storage import ObjectStore

from ..conftest import issue_token

GUARD_SECONDS = 30  # deadline on streams/startup so a bug cannot hang the suite; never asserted on


async def _cancel_background_tasks() -> None:
    """Stop what the gateway left running on this loop (e.g. the backlog monitor)."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class GatewayThread:
    """start_server(settings) on a private event loop in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        try:
            server, self.port = await start_server(self.settings)
            self._stop = asyncio.Event()
        except BaseException as exc:  # surface start-up errors in the test thread
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        await self._stop.wait()
        await server.stop(grace=None)
        await _cancel_background_tasks()

    def start(self) -> str:
        self._thread.start()
        if not self._ready.wait(GUARD_SECONDS):
            raise TimeoutError("gateway did not start")
        if self._error is not None:
            raise self._error
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(GUARD_SECONDS)
        self._loop.close()


GatewayFactory = Callable[..., CallQCClient]


@pytest.fixture()
def make_gateway(settings: Settings) -> Iterator[GatewayFactory]:
    """Start a gateway with optional ``gateway``/``audio`` setting overrides; returns a client to it."""
    started: list[tuple[GatewayThread, CallQCClient]] = []

    def make(
        gateway: dict | None = None,
        audio: dict | None = None,
        subject: str = "system-a",
        roles: tuple = ("call_system",),
    ) -> CallQCClient:
        gw = settings.gateway.model_copy(update={"port": 0, "watch_poll_seconds": 0.02, **(gateway or {})})
        au = settings.audio.model_copy(update=audio or {})
        server = GatewayThread(settings.model_copy(update={"gateway": gw, "audio": au}))
        token = issue_token(settings, subject, *roles)
        client = CallQCClient(server.start(), ClientAuth(local=True, token=token), timeout=GUARD_SECONDS)
        started.append((server, client))
        return client

    yield make
    for server, client in started:
        client.close()
        server.stop()


@pytest.fixture()
def client(make_gateway: GatewayFactory) -> CallQCClient:
    return make_gateway()


@pytest.fixture()
def jobs(store: ObjectStore, settings: Settings) -> JobStore:
    return JobStore(store, settings.s3, io_threads=4)


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.details()
    return info.value.code()
