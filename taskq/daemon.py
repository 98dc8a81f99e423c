"""Running `taskq worker` and `taskq beat` as a daemon: `--detach`, `--pidfile`, `--logfile`,
`--uid`/`--gid`, all set up before the event loop starts (a fork under a running loop is not
safe).

The pidfile is checked before detaching, so that a refusal is seen where the command was
typed, and written by the detached process: one a live process holds is refused, one left by a
dead process is replaced. The log file takes the process's stdout and stderr (file descriptors
1 and 2, so children and anything printed go there too) and is opened again on SIGHUP, after
logrotate moved it. Privileges are dropped last, once the pidfile and log file are open.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from taskq.errors import CommandError

logger = logging.getLogger("taskq.daemon")

_logfile: str | None = None  # the --logfile of this process, reopened by reopen_logfile()


@dataclass(frozen=True, slots=True)
class Daemon:
    detach: bool = False
    pidfile: str | None = None
    logfile: str | None = None
    uid: str | None = None
    gid: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Daemon:
        """The daemon options among a command's (absent for a command without them)."""
        return cls(
            bool(options.get("detach")),
            options.get("pidfile"),
            options.get("logfile"),
            options.get("uid"),
            options.get("gid"),
        )

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Detach, write the pidfile, take the log file, drop privileges; remove the pidfile
        at the end."""
        if self.detach and self.logfile is None:
            raise CommandError("--detach needs --logfile: a detached process has no terminal")
        user = _user(self.uid, self.gid)
        if self.pidfile is not None:
            check_pidfile(self.pidfile)
        if self.detach:
            _detach()
        if self.pidfile is not None:
            write_pidfile(self.pidfile)
        try:
            if self.logfile is not None:
                take_logfile(self.logfile, user)
            if user is not None:
                os.setgid(user[1])
                os.setuid(user[0])
            yield
        finally:
            if self.pidfile is not None:
                remove_pidfile(self.pidfile)


def check_pidfile(path: str) -> None:
    """Refuse when a live process holds `path`; remove it when the one that wrote it is gone."""
    try:
        with open(path) as existing:
            text = existing.read().strip()
    except FileNotFoundError:
        return
    pid = int(text) if text.isdigit() else None
    if pid is not None and pid != os.getpid() and _alive(pid):
        raise CommandError(f"pidfile {path} is held by process {pid}, which is running")
    logger.warning("Replacing the stale pidfile %s (process %s is gone)", path, text or "?")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def write_pidfile(path: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # written since it was checked: held, or stale again
        check_pidfile(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as pidfile:
        pidfile.write(f"{os.getpid()}\n")


def remove_pidfile(path: str) -> None:
    """Remove `path` if it still names this process (a dropped privilege may not allow it:
    it is stale then, and replaced at the next start)."""
    with contextlib.suppress(OSError), open(path) as pidfile:
        if pidfile.read().strip() == str(os.getpid()):
            os.unlink(path)


def take_logfile(path: str, user: tuple[int, int] | None = None) -> None:
    """Send this process's stdout and stderr to `path` (appending)."""
    global _logfile
    _logfile = path
    _redirect(path)
    if user is not None:
        os.chown(path, *user)


def logfile() -> str | None:
    """This process's --logfile, if it has one."""
    return _logfile


def reopen_logfile() -> None:
    """Open the log file again (SIGHUP): logrotate moved the old one away."""
    if _logfile is not None:
        _redirect(_logfile)
        logger.info("Reopened the log file %s", _logfile)


def _redirect(path: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _detach() -> None:
    """Become a daemon: fork, a new session, fork again (no terminal can be reacquired);
    stdin from /dev/null. The command's process returns at once, exit status 0."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def _user(uid: str | None, gid: str | None) -> tuple[int, int] | None:
    """(uid, gid) to run as, from names or numbers; only root may change them."""
    if uid is None and gid is None:
        return None
    if os.getuid() != 0:
        raise CommandError(f"--uid/--gid need root to change to (this runs as uid {os.getuid()})")
    try:
        account = pwd.getpwnam(uid) if uid and not uid.isdigit() else None
        user_id = account.pw_uid if account else int(uid) if uid else os.getuid()
        if gid is not None:
            group_id = int(gid) if gid.isdigit() else grp.getgrnam(gid).gr_gid
        else:
            group_id = account.pw_gid if account else pwd.getpwuid(user_id).pw_gid
    except KeyError as exc:
        raise CommandError(f"no such user or group: {exc.args[0]}") from None
    return user_id, group_id
