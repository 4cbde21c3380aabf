"""The pidfile: written once the sockets are bound, replaced only if it is one, removed only while it is ours.

A pidfile is replaced only if it is a regular file with one link (ownfile.py)
holding one pid line, and that pid is no live process (a daemon that died) or
is our own; a live prngd's pidfile is refused, and so is that of any other live
program: `-p other.pid` must not take the pidfile of another daemon.
"""

from __future__ import annotations

import os

from prngd import ownfile
from prngd.listeners import StartupError

PIDFILE_MAX = 64  # a pid line is a few bytes: anything larger is not a pidfile


def _refused(path: str, why: str) -> StartupError:
    return StartupError("pidfile " + ownfile.refused(path, why))


def _pidfile_pid(path: str) -> int | None:
    """The pid in the pidfile at `path`; None if absent.  StartupError if it is not a pidfile.

    A pidfile is a small regular file with one link (not a symlink) holding one
    decimal pid line: anything else at the path was not written by a daemon,
    and is left alone.
    """
    try:
        st = ownfile.lstat(path)
    except OSError as e:
        raise StartupError(f"pidfile {path}: {e.strerror}") from None
    if st is None:
        return None
    why = ownfile.refusal(st, "a pidfile")
    if why:
        raise _refused(path, why)
    if st.st_size > PIDFILE_MAX:
        raise _refused(path, f"holds {st.st_size} bytes, not a pid")
    try:
        fd = os.open(path, os.O_RDONLY | ownfile.SAFE_OPEN)
        try:
            text = os.read(fd, PIDFILE_MAX + 1)
        finally:
            os.close(fd)
    except OSError as e:
        raise StartupError(f"pidfile {path}: {e.strerror}") from None
    body = text[:-1] if text.endswith(b"\n") else text
    if not body.strip(b" ").isdigit():
        raise _refused(path, "does not hold a pid line")
    return int(body)


def _alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie runs nothing: it is not)."""
    if pid <= 0:
        return False  # kill(0) and kill(-1) would mean whole process groups: no process has such a pid
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[:1]
    except FileNotFoundError:
        return False
    except OSError:
        state = []  # no /proc: kill(pid, 0) says whether it exists
    if state == [b"Z"]:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # someone else's, and running
    return True


def write_pidfile(path: str) -> None:
    """Write our pid to `path` if that replaces nothing but a dead daemon's pidfile; StartupError otherwise."""
    old = _pidfile_pid(path)
    if old is not None and old != os.getpid() and _alive(old):
        if is_prngd(old):
            raise StartupError(f"pidfile {path} names prngd pid {old}, which is still running")
        name = " ".join(cmdline(old)[:2]) or "?"
        raise _refused(path, f"names pid {old}, a running program that is not prngd ({name})")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise StartupError(f"cannot write pidfile {path}: directory {parent} does not exist")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | ownfile.SAFE_OPEN, 0o644)
        try:
            why = ownfile.refusal(os.fstat(fd), "a pidfile")  # swapped under us since the check
            if why:
                raise _refused(path, why)
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


_PYTHON_OPTIONS_WITH_VALUE = "WX"  # -W arg, -X opt (-m and -c are handled apart)


def _is_python(name: str) -> bool:
    """python, python3, python3.11, python3.11d, python3-dbg, pypy3 ..."""
    for interpreter in ("python", "pypy"):
        if name.startswith(interpreter):
            version = name[len(interpreter):].removesuffix("-dbg").removesuffix("d")
            return all(c.isdigit() or c == "." for c in version)
    return False


def is_prngd_argv(argv: list[str]) -> bool:
    """Whether a command line runs one of prngd's own entry points, and nothing else.

    Accepted: the `prngd` script run directly (argv[0] named prngd), or by a
    Python interpreter (`python3 [opts] /usr/local/bin/prngd ...`), and
    `python3 [opts] -m prngd ...`.  Another program that merely takes a path
    ending in prngd as an argument (`less /usr/bin/prngd`) is not a prngd.
    """
    if not argv:
        return False
    if os.path.basename(argv[0]) == "prngd":
        return True
    if not _is_python(os.path.basename(argv[0])):
        return False
    # The interpreter's own options, as its command line parser reads them,
    # up to what it runs: a module (-m), a command (-c), stdin, or a script.
    args = iter(argv[1:])
    for arg in args:
        if arg == "--":
            return os.path.basename(next(args, "")) == "prngd"
        if arg == "--check-hash-based-pycs":
            next(args, None)
            continue
        if arg.startswith("--"):
            continue  # --help, --version and the like take no value
        if arg == "-" or not arg.startswith("-"):
            return os.path.basename(arg) == "prngd"  # the script (or "-", stdin)
        flags = arg[1:]
        for i, flag in enumerate(flags):
            if flag == "c":
                return False
            if flag == "m":
                return (flags[i + 1:] or next(args, "")) == "prngd"
            if flag in _PYTHON_OPTIONS_WITH_VALUE:
                if not flags[i + 1:]:
                    next(args, None)
                break
    return False


def is_prngd(pid: int) -> bool:
    return is_prngd_argv(cmdline(pid))
