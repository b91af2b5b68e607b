"""Object storage over the S3 API (minio SDK): MinIO in production, rclone locally.

Only S3 calls are used, so changing servers is a configuration change. Every method is
synchronous; async callers run them in a thread pool.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, BinaryIO

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error

from callqc.settings import S3Settings, Settings

_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NotFound"}


class ObjectNotFound(KeyError):
    """The key is not in the bucket."""


def _is_not_found(err: Exception) -> bool:
    """S3Error with a not-found code, or a 404 the SDK could not parse (rclone's XML)."""
    if isinstance(err, S3Error):
        return err.code in _NOT_FOUND_CODES
    if isinstance(err, InvalidResponseError):
        return "Response code: 404" in str(err)
    return False


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    etag: str = ""


class ObjectStore:
    """A bucket, addressed by key. Creates the bucket on first use if it is missing."""

    def __init__(self, settings: S3Settings, *, create_bucket: bool = True) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        tls = {}
        if settings.secure and settings.ca_file:  # a private CA (e.g. the local stack's) signed the S3 cert
            tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": settings.ca_file}
        http = urllib3.PoolManager(
            **tls,
            num_pools=16,
            maxsize=32,
            timeout=urllib3.Timeout(connect=5, read=60),
            retries=urllib3.Retry(total=4, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self.client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key.get_secret_value(),
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )
        if create_bucket and not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as err:  # another process created it first
                if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    # -- bytes ---------------------------------------------------------------------------
    def put_bytes(
        self,
        key: str,
        data: bytes,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
    ) -> None:
        self.client.put_object(
            self.bucket, key, io.BytesIO(data), len(data), content_type=content_type, metadata=metadata
        )

    def put_stream(
        self,
        key: str,
        stream: BinaryIO,
        length: int,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
    ) -> None:
        self.client.put_object(
            self.bucket,
            key,
            stream,
            length,
            content_type=content_type,
            metadata=metadata,
            part_size=16 * 1024 * 1024,
        )

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(self.bucket, key)
        except (S3Error, InvalidResponseError) as err:
            if _is_not_found(err):
                raise ObjectNotFound(key) from err
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            obj = self.client.stat_object(self.bucket, key)
        except (S3Error, InvalidResponseError) as err:
            if _is_not_found(err):
                return None
            raise
        meta = {
            k.lower().removeprefix("x-amz-meta-"): v
            for k, v in (obj.metadata or {}).items()
            if k.lower().startswith("x-amz-meta-")
        }
        return ObjectInfo(key=key, size=obj.size or 0, metadata=meta, etag=obj.etag or "")

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(
            obj.object_name
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            if obj.object_name and not obj.is_dir
        )

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, key)

    def put_if_absent(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> bool:
        """Create-only write. Best effort: S3 servers without conditional writes race here."""
        if self.exists(key):
            return False
        self.put_bytes(key, data, metadata)
        return True

    def presigned_get(self, key: str, expires_seconds: int = 300) -> str:
        return self.client.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expires_seconds))

    # -- JSON ----------------------------------------------------------------------------
    def put_json(self, key: str, value: Any) -> None:
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        self.put_bytes(key, data, content_type="application/json")

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))


def open_store(settings: Settings) -> ObjectStore:
    """The bucket as every component should use it: client-side encrypted with the master keyring.

    Without a keyring this refuses to start (``security.require_encryption_at_rest``), so a
    misconfigured deployment cannot silently write plaintext personal data.
    """
    from callqc.security.envelope import EncryptedObjectStore, Keyring

    inner = ObjectStore(settings.s3)
    try:
        keyring = Keyring.from_settings(settings.security.envelope)
    except LookupError:
        if settings.security.require_encryption_at_rest:
            raise
        return inner
    return EncryptedObjectStore(inner, keyring)  # type: ignore[return-value]


def read_maybe_plaintext(store: ObjectStore, key: str) -> bytes:
    """Read an object the bank's own systems may have written unencrypted (audio dropped in the bucket)."""
    from callqc.security.envelope import NotEncryptedError

    try:
        return store.get_bytes(key)
    except NotEncryptedError:
        return store.inner.get_bytes(key)  # type: ignore[attr-defined]
