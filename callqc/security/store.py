"""The slice of ``callqc.storage.ObjectStore`` the security modules use, as a Protocol.

Kept here so the security package does not import the storage layer (and its S3 client);
any object with these methods works, including the test fake.
"""

from __future__ import annotations

from typing import Any, Protocol


class ObjectStoreLike(Protocol):
    def put_bytes(
        self,
        key: str,
        data: bytes,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
    ) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def stat(self, key: str) -> Any | None: ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def put_if_absent(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> bool: ...


def is_not_found(exc: BaseException) -> bool:
    """True for the store's 'no such object' error (``callqc.storage.ObjectNotFound`` or a KeyError)."""
    return isinstance(exc, KeyError | FileNotFoundError) or any(
        cls.__name__ == "ObjectNotFound" for cls in type(exc).__mro__
    )


def get_or_none(store: ObjectStoreLike, key: str) -> bytes | None:
    """``store.get_bytes(key)``, or None when the object does not exist."""
    try:
        return store.get_bytes(key)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise
