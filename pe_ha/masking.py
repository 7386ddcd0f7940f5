"""Masking of secrets in everything pe-ha logs or stores.

Prefect does not redact ``Secret.get()`` values, so pe-ha keeps its own register of secret values and
masks them in log lines, command renderings and artifacts. Register a secret the moment it is read.
"""

from __future__ import annotations

import logging
import threading

MASK = "********"
_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember ``value`` so it never leaves pe-ha unmasked. Very short values are ignored."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)
            stripped = value.strip()
            if len(stripped) >= 4:
                _secrets.add(stripped)


def mask(text: str) -> str:
    """``text`` with every registered secret replaced by ``********``."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class MaskingFilter(logging.Filter):
    """A logging filter that masks registered secrets in a record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not ours to fix here
            return True
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def install_log_masking(*logger_names: str) -> None:
    """Attach the masking filter to the named loggers (idempotent)."""
    for name in logger_names or ("prefect", "pe_ha"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskingFilter) for f in logger.filters):
            logger.addFilter(MaskingFilter())
