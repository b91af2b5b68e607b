"""``callqc web``: serve the reviewer page."""

from __future__ import annotations

import os

import typer
from rich.console import Console

console = Console()


def web(
    host: str = typer.Option("", help="listen address (default: web.host from settings)"),
    port: int = typer.Option(0, help="port (default: web.port from settings)"),
) -> None:
    """Serve the reviewer page (HTTPS): batches by verdict, calls with transcript, findings and audio."""
    from urllib3.exceptions import HTTPError

    from callqc.settings import load_settings
    from callqc.stack import LocalSecrets, apply_state_to_environment
    from callqc.web.server import serve

    settings = load_settings()
    if apply_state_to_environment(settings.home):  # the local stack is up: its keys and certificate
        secrets = LocalSecrets(settings.home)
        os.environ.setdefault("CALLQC_SECURITY__TOKENS__SIGNING_KEY_FILE", str(secrets.signing_key))
        os.environ.setdefault("CALLQC_SECURITY__TLS__CERT_FILE", str(secrets.pki / "server.crt"))
        os.environ.setdefault("CALLQC_SECURITY__TLS__KEY_FILE", str(secrets.pki / "server.key"))
    settings = load_settings()
    updates = {k: v for k, v in {"host": host, "port": port}.items() if v}
    if updates:
        settings = settings.model_copy(update={"web": settings.web.model_copy(update=updates)})
    scheme = "https" if settings.web.tls_mode == "tls" else "http"
    console.print(f"reviewer page on [bold]{scheme}://{settings.web.host}:{settings.web.port}/[/]")
    try:
        serve(settings)
    except (ValueError, LookupError, OSError, HTTPError) as err:  # settings, keys, certificate, S3 unreachable
        console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(1) from None
