"""Configuration of the reviewer web page, nested as ``settings.web`` (``CALLQC_WEB__*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class WebSettings(BaseModel):
    """The HTTPS server of the reviewer page. TLS material is the gateway's (``security.tls.*``)."""

    host: str = "127.0.0.1"
    port: int = Field(8443, ge=0, le=65535)
    # tls: HTTPS with security.tls.cert_file / key_file; plain: HTTP, loopback only (tests / development
    # on one machine — never in production), like the gateway's tls_mode=local.
    tls_mode: Literal["tls", "plain"] = "tls"
    audio_url_ttl_seconds: int = Field(120, ge=5, le=900, description="lifetime of a signed audio URL")
    # 32+ random bytes shared by all replicas behind one load balancer; None: a random key per process
    # (URLs then only work on the replica that issued them).
    audio_signing_key_file: Path | None = None
    audio_cache_bytes: int = Field(256 * 1024 * 1024, ge=0, description="decrypted audio kept for Range reads")
    cookie_name: str = "callqc_session"
    io_threads: int = Field(4, ge=1)
