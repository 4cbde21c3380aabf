"""The pidfile: written once the sockets are bound, replaced only if it is one, removed only while it is ours."""

from __future__ import annotations

import os
import stat

from prngd import filekind
from prngd.listeners import StartupError



PIDFILE_MAX = 64  # a pid line is a few bytes: anything larger is not a pidfile


def _pidfile_pid(path: str) -> int | None:
    """The pid in the pidfile at `path`; None if absent.  StartupError if it is not a pidfile.

    A pidfile is a small regular file (not a symlink) holding one decimal pid
    line: anything else at the path was not written by a daemon, and is left alone.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StartupError(f"pidfile {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise StartupError(f"pidfile {path} exists and is {filekind.describe(st.st_mode)}, not a pidfile; not replacing it")
    if st.st_size > PIDFILE_MAX:
        raise StartupError(f"pidfile {path} exists and holds {st.st_size} bytes, not a pid; not replacing it")
    try:
        with open(path, "rb") as f:
            text = f.read(PIDFILE_MAX + 1)
    except OSError as e:
        raise StartupError(f"pidfile {path}: {e.strerror}") from None
    body = text[:-1] if text.endswith(b"\n") else text
    if not body.strip(b" ").isdigit():
        raise StartupError(f"pidfile {path} exists and does not hold a pid line; not replacing it")
    return int(body)


def write_pidfile(path: str) -> None:
    """Write our pid to `path` if that replaces nothing but a pidfile; StartupError otherwise."""
    old = _pidfile_pid(path)
    if old is not None and old != os.getpid() and is_prngd(old):
        raise StartupError(f"pidfile {path} names prngd pid {old}, which is still running")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise StartupError(f"cannot write pidfile {path}: directory {parent} does not exist")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped under us since the check
                raise StartupError(f"pidfile {path} is not a regular file; not writing it")
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise StartupError(f"cannot write pidfile {path}: {e.strerror}") from None


def remove_pidfile(path: str) -> None:
    """Remove `path` only while it still holds our pid: never another daemon's."""
    try:
        if _pidfile_pid(path) == os.getpid():
            os.unlink(path)
    except (StartupError, OSError):
        pass


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def is_prngd_argv(argv: list[str]) -> bool:
    """`prngd ...` (or `python3 /usr/bin/prngd ...`) or `python3 [opts] -m prngd ...`."""
    if any(os.path.basename(a) == "prngd" for a in argv[:2]):
        return True
    return any(a == "-m" and b == "prngd" for a, b in zip(argv[1:4], argv[2:5]))


def is_prngd(pid: int) -> bool:
    return is_prngd_argv(cmdline(pid))
