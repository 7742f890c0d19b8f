"""The TLS files a gRPC port is served with (by grpc.aio, or by Envoy for the asgi workers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Tls:
    """PEM files for serving gRPC over TLS; with `client_ca`, clients must present a
    certificate it signed (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None
