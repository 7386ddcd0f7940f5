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
    """A logging filter that masks registered secrets in a record's final message and its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not ours to fix here
            return True
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True


def _attach(holder: logging.Logger | logging.Handler) -> None:
    if not any(isinstance(f, MaskingFilter) for f in holder.filters):
        holder.addFilter(MaskingFilter())


def install_log_masking(*prefixes: str) -> None:
    """Attach the masking filter to every handler of the root logger and of the loggers under ``prefixes``
    (Prefect's API log handler among them), and to those loggers (idempotent).

    A logger's own filters apply only to records created on that very logger; a handler's apply to every
    record it emits, whichever child logger made it (``prefect.flow_runs``, ``prefect.task_runs``,
    ``pe_ha.remote``). So the handlers are what must carry the filter.
    """
    prefixes = prefixes or ("prefect", "pe_ha")
    loggers = [logging.getLogger()]
    for name in list(logging.root.manager.loggerDict):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            loggers.append(logging.getLogger(name))
    loggers += [logging.getLogger(p) for p in prefixes]
    for logger in loggers:
        _attach(logger)
        for handler in logger.handlers:
            _attach(handler)
