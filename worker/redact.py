"""Passwords never leave the worker: every message it prints or logs goes through `redact`.

A DSN or an engine URL may carry credentials (`postgresql://app:s3cret@db/x`,
`https://elastic:changeme@es:9200`), and they end up in error texts: libpq and httpx quote the
target, pydantic quotes the bad value, a person pastes a URL in a setting. Rather than hoping each
call site remembers, the logger, the settings errors, the startup lines and the outcome summaries
(which feed span events) all pass through this one function.

Three shapes are masked: the userinfo password of any URL (`scheme://user:***@host`), libpq
keyword pairs (`password=***`) and URL query parameters (`?password=***`). The user name stays:
it helps an operator and is not a secret.
"""

from __future__ import annotations

import re
from typing import Final

MASK: Final = "***"

# scheme://user:password@  (the password may be empty; `@`, `/`, whitespace end it)
_URL_USERINFO: Final = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:@/\s?#]*):(?P<pw>[^@/\s?#]*)@")
# password=secret or password='sec ret' in a libpq keyword DSN or an error quoting one
_KEYWORD: Final = re.compile(r"(?P<head>\b(?:password|passwd|pwd)\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s&#'\"]+)", re.IGNORECASE)
# ?password=secret&... in a URL query
_QUERY: Final = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)(?P<pw>[^&\s#]*)", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every password it quotes replaced by `***`."""
    # Cheap pre-check: the per-event log lines (uuids, op names) never contain either
    # character, so the regexes only run on the rare text that could hold a secret.
    if "@" not in text and "=" not in text:
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _QUERY.sub(lambda m: m["head"] + MASK, text)
    return _KEYWORD.sub(lambda m: m["head"] + MASK, text)
