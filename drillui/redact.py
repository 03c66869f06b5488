"""Secrets never leave through a message or a file: URLs without passwords, env without secrets.

Everything drillui prints, logs or records (the recipe, the event log, error lines) goes through
these first. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

_SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|KEY|DSN|DATABASE_URL)", re.IGNORECASE)
# scheme://user:password@host — the password part, wherever such a URL sits in a text.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s:/@]*):(?P<secret>[^\s@/]*)@", re.IGNORECASE)
# libpq keyword form: password=... in a DSN or an error message.
_KW_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'[^']*'|\S+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """scheme://host:port/path, without user, password or query: never a full DSN."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return redact_text(url)
    if not parts.scheme:
        return redact_text(url)
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def redact_text(text: str) -> str:
    """The same text with every URL password and `password=` value replaced by `***`."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:***@", text)
    return _KW_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in env.items():
        if _SECRETISH.search(key):
            out[key] = redact_url(value) if "://" in value else "<redacted>"
        elif "://" in value:
            out[key] = redact_url(value)
        else:
            out[key] = value
    return out
