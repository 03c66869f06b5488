"""Secrets of the stack: kept in files only their owner can read, never shown in a message.

Why it exists: the stack hands passwords around (the embedded Postgres's own, and any in an
override URL such as `DATABASE_URL=postgresql://app:pw@db/app`). Other drillui processes of the
same user need them to connect, so they must be written down; nobody else on the machine may read
them, and no terminal, log line or JSON summary may show them. So:

- `redact_url` hides the password of a URL (userinfo and libpq's `?password=`), for every message;
- `write_private` writes a file mode 0600, atomically (a reader never sees half of it), refusing
  to follow a symlink planted in its place;
- `private_folder` makes the state folder 0700 (0710 for the Postgres system user's group when
  drillui runs as root: postgres runs as that user and must traverse to its data folder).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from drillui.errors import StackError, UsageError

PRIVATE_FILE_MODE: Final = 0o600
PRIVATE_DIR_MODE: Final = 0o700
MASK: Final = "***"
_SECRET_PARAMS: Final = frozenset({"password", "passwd", "pass", "pwd", "sslpassword", "secret", "token", "api_key", "apikey"})
_FALLBACK_USERINFO: Final = re.compile(r"(://[^:/@?#]*:)[^/?#]*@")


def redact_url(url: str) -> str:
    """The URL with its password (userinfo or query parameter) replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        # Not parseable (e.g. a broken IPv6 literal): hide anything between ':' and the last '@'.
        return _FALLBACK_USERINFO.sub(rf"\g<1>{MASK}@", url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
            query = "&".join(
                f"{quote(key, safe='')}={MASK if key.lower() in _SECRET_PARAMS else quote(value, safe='')}" for key, value in pairs
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600, via a temporary file renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    # O_EXCL + O_NOFOLLOW: a symlink someone planted at the temporary name is not written through.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask cannot loosen it, but an odd one could tighten it
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            fd = -1
            out.write(text)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def open_private(path: Path) -> int:
    """Open (create) `path` read-write with mode 0600, tightening an existing looser file."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return fd


def private_folder(path: Path, *, traverse_gid: int | None = None) -> None:
    """Create `path` (and its parents) and make it 0700, or 0710 with group `traverse_gid`.

    An existing folder writable by others (such as /tmp) is refused rather than changed: it is
    not a state folder, and tightening it would break everyone else using it.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        info = path.lstat()
    except OSError as exc:
        raise StackError(f"cannot create the state folder {path}: {exc}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"the state folder {path} is not a folder")
    if info.st_mode & stat.S_IWOTH:
        raise UsageError(
            f"the state folder {path} is writable by every user",
            hint="choose a folder of your own, e.g. DRILLUI_STATE_DIR=~/.local/state/drillui",
        )
    if info.st_uid != os.geteuid():
        raise UsageError(f"the state folder {path} belongs to another user (uid {info.st_uid})", hint="choose a folder of your own")
    mode = PRIVATE_DIR_MODE
    if traverse_gid is not None:
        if info.st_gid != traverse_gid:
            os.chown(path, -1, traverse_gid)
        mode |= stat.S_IXGRP
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)
