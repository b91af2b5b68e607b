"""Run the reviewer page under uvicorn: HTTPS with the gateway's certificate, plain HTTP on loopback only."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from callqc.settings import Settings

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def uvicorn_config(settings: Settings, app: Any, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` from ``settings.web`` and ``settings.security.tls``."""
    web = settings.web
    tls: dict[str, Any] = {}
    if web.tls_mode == "plain":
        if web.host not in LOOPBACK:
            raise ValueError("web.tls_mode=plain is for loopback only; use tls on other addresses")
    else:
        cert = settings.security.tls
        if cert.cert_file is None or cert.key_file is None:
            raise ValueError(
                "web.tls_mode=tls needs security.tls.cert_file and key_file "
                "(CALLQC_SECURITY__TLS__CERT_FILE / __KEY_FILE)"
            )
        tls = {"ssl_certfile": str(cert.cert_file), "ssl_keyfile": str(cert.key_file)}
    options: dict[str, Any] = {
        "host": web.host,
        "port": web.port,
        "log_level": "info",
        "proxy_headers": False,
        "server_header": False,
        "access_log": True,
        **tls,
        **overrides,
    }
    return uvicorn.Config(app, **options)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port), for servers started in tests."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> None:
    """Build the app and serve until interrupted."""
    from callqc.web.app import create_app

    uvicorn.Server(uvicorn_config(settings, create_app(settings))).run()
