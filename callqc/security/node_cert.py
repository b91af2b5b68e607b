"""Issue this Ray pod's TLS certificate at start-up (KubeRay init container; see helm/callqc, ``ray.tls``).

    python -m callqc.security.node_cert --ca-dir /etc/ray/ca --out /etc/ray/tls --host "$POD_IP" --host localhost

Ray's mutual TLS checks each peer's certificate against the address it dials, which is the pod IP, known
only when the pod starts. The CA (``ca.crt`` / ``ca.key``) comes from a Secret; ``ca.crt`` is copied beside
the issued pair so that the pod's ``RAY_TLS_*`` variables point at one directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from callqc.security.tls import CertPair, issue_node_certificate


def main(
    ca_dir: Annotated[Path, typer.Option(help="directory with the Ray CA's ca.crt and ca.key")],
    out: Annotated[Path, typer.Option(help="where node.crt, node.key and ca.crt are written")],
    host: Annotated[list[str], typer.Option(help="SAN: the pod IP first, then other names")],
    days: Annotated[int, typer.Option(help="validity; pods are replaced long before")] = 30,
) -> None:
    pair = issue_node_certificate(CertPair(ca_dir / "ca.crt", ca_dir / "ca.key"), host, out, days=days)
    shutil.copyfile(ca_dir / "ca.crt", out / "ca.crt")
    typer.echo(f"issued {pair.cert} for {', '.join(host)}")


if __name__ == "__main__":
    typer.run(main)
