"""phantom.tls.backend_context for a server with several backends: a context as soon as one
of them is https://, none when all are http://."""

from __future__ import annotations

import ssl

from phantom.config import config_from_dict
from phantom.tls import backend_context


def context_for(*urls: str) -> ssl.SSLContext | None:
    data = {"server": {"app": {"backends": [{"url": url} for url in urls]}}}
    return backend_context(config_from_dict(data, "t").servers[0], "t")


def test_any_https_backend_gets_a_verifying_context() -> None:
    assert context_for("http://a.internal", "http://b.internal") is None
    context = context_for("http://a.internal", "https://b.internal")
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
