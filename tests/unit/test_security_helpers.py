"""Test doubles for the security tests (no tests here).

``FakeObjectStore`` is an in-memory FAKE of ``callqc.storage.ObjectStore`` (same methods);
``AioServerThread`` runs a real ``grpc.aio`` server on 127.0.0.1 in a background thread so
tests can call it with ordinary blocking clients.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import md5

import grpc
from grpc import aio


class ObjectNotFound(KeyError):
    """Same name as ``callqc.storage.ObjectNotFound``; raised by the fake."""


@dataclass
class FakeObjectInfo:
    key: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    etag: str = ""


class FakeObjectStore:
    """In-memory FAKE object store with the ``callqc.storage.ObjectStore`` methods."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, dict[str, str], str]] = {}
        self._lock = threading.Lock()

    def put_bytes(
        self,
        key: str,
        data: bytes,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
    ) -> None:
        with self._lock:
            self.objects[key] = (bytes(data), dict(metadata or {}), content_type)

    def get_bytes(self, key: str) -> bytes:
        with self._lock:
            if key not in self.objects:
                raise ObjectNotFound(key)
            return self.objects[key][0]

    def stat(self, key: str) -> FakeObjectInfo | None:
        with self._lock:
            if key not in self.objects:
                return None
            data, md, _ = self.objects[key]
            return FakeObjectInfo(key, len(data), dict(md), md5(data).hexdigest())

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self.objects

    def list_keys(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(k for k in self.objects if k.startswith(prefix))

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)

    def put_if_absent(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> bool:
        with self._lock:
            if key in self.objects:
                return False
            self.objects[key] = (bytes(data), dict(metadata or {}), "application/octet-stream")
            return True


class AioServerThread:
    """A real grpc.aio server on 127.0.0.1:<free port>, served from its own event loop thread."""

    def __init__(
        self,
        handlers: Sequence[grpc.GenericRpcHandler],
        interceptors: Sequence[aio.ServerInterceptor] = (),
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self._handlers = handlers
        self._interceptors = interceptors
        self._credentials = credentials
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0
        self.target = ""

    async def _main(self) -> None:
        try:
            server = aio.server(interceptors=list(self._interceptors))
            server.add_generic_rpc_handlers(tuple(self._handlers))
            if self._credentials is None:
                self.port = server.add_insecure_port("127.0.0.1:0")
            else:
                self.port = server.add_secure_port("127.0.0.1:0", self._credentials)
            await server.start()
            self._stop = asyncio.Event()
        except BaseException as exc:  # surface start-up errors in the test thread
            self._error = exc
            self._ready.set()
            raise
        self.target = f"127.0.0.1:{self.port}"
        self._ready.set()
        await self._stop.wait()
        await server.stop(grace=None)

    def __enter__(self) -> AioServerThread:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("grpc.aio server did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()
