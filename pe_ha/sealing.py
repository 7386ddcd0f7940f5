"""An approver's RBAC token, sealed to one paused run.

A paused run makes a key pair and publishes only the public half. ``pe-ha approve`` seals the approver's
token to it (X25519, HKDF-SHA256, AES-GCM, bound to the run's id), so Prefect's database holds ciphertext
that only the paused process can open. The run opens it and asks RBAC itself whose token it is: the login it
records is RBAC's answer, not a name someone typed. When the process ends, the private half is gone, and
the stored ciphertext can never be opened again.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from pe_ha.errors import ValidationError

_INFO = b"pe-ha approval token v1"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def _key(shared: bytes, context: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO + context.encode()).derive(shared)


@dataclass(frozen=True)
class SealingKey:
    """The paused run's key pair; only ``public`` ever leaves the process."""

    _private: X25519PrivateKey

    @classmethod
    def new(cls) -> SealingKey:
        return cls(X25519PrivateKey.generate())

    @property
    def public(self) -> str:
        return base64.b64encode(self._private.public_key().public_bytes(*_RAW)).decode()

    def open(self, sealed: str, *, context: str) -> SecretStr:
        """The token sealed to this key for ``context``; ValidationError when it was sealed to another run's key,
        for another context, or altered."""
        try:
            raw = base64.b64decode(sealed, validate=True)
            sender, nonce, ciphertext = raw[:32], raw[32:44], raw[44:]
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(sender))
            plain = AESGCM(_key(shared, context)).decrypt(nonce, ciphertext, context.encode())
        except (ValueError, InvalidTag):
            raise ValidationError("the sealed token does not open with this run's key: it was sealed for another "
                                  "run or another pause, or it was altered; run `pe-ha approve` again") from None
        return SecretStr(plain.decode())


def seal(public: str, token: SecretStr, *, context: str) -> str:
    """``token`` sealed to the holder of ``public`` for ``context`` (the flow run's id)."""
    try:
        recipient = X25519PublicKey.from_public_bytes(base64.b64decode(public, validate=True))
    except ValueError:
        raise ValidationError("the run's approval key is not a key: the run may not be waiting for approval") from None
    sender = X25519PrivateKey.generate()
    nonce = os.urandom(12)
    key = _key(sender.exchange(recipient), context)
    ciphertext = AESGCM(key).encrypt(nonce, token.get_secret_value().encode(), context.encode())
    return base64.b64encode(sender.public_key().public_bytes(*_RAW) + nonce + ciphertext).decode()
