"""The kinds of JWT key phantom checks with, and reading a ``public_key`` file.

Pure module, importable without the ``jwt`` extra (the configuration reads the algorithm
families from here); ``cryptography`` is imported only to read a key file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = ["HMAC_MIN_BYTES", "JWT_FAMILIES", "KeyProblem", "LoadedKey", "load_public_key"]

JWT_FAMILIES: Final = {
    "hmac": ("HS256", "HS384", "HS512"),
    "rsa": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "ec": ("ES256", "ES384", "ES512"),
    "okp": ("EdDSA",),
}
# RFC 7518 §3.2: an HMAC key at least as long as the hash.
HMAC_MIN_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class KeyProblem(ValueError):
    """A ``public_key`` file that can't be used; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class LoadedKey:
    key: Any  # a cryptography public key
    algorithms: tuple[str, ...]  # the ones that key can check


def load_public_key(path: str) -> LoadedKey:
    """A PEM public key (or an X.509 certificate holding one) and the algorithms it fits."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError:
        raise KeyProblem("needs the jwt extra: pip install 'phantom-proxy[jwt]'") from None
    try:
        with open(path, "rb") as file:
            pem = file.read()
    except OSError as exc:
        raise KeyProblem(f"{path}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key: Any = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = load_pem_public_key(pem)
    except ValueError:
        raise KeyProblem(f"{path}: not a PEM public key or certificate") from None
    if isinstance(key, rsa.RSAPublicKey):
        return LoadedKey(key, JWT_FAMILIES["rsa"])
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        return LoadedKey(key, (_EC_ALGORITHMS[key.curve.name],))
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return LoadedKey(key, JWT_FAMILIES["okp"])
    raise KeyProblem(f"{path}: a {type(key).__name__} can't check JWTs")


