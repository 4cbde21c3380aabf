"""The one rule for every file prngd replaces, removes or writes into: only what it can show it wrote.

The seed file, the exchange file, the pidfile, the Unix sockets and the log
file all go through here:

* a symbolic link is never followed, replaced or removed (lstat, O_NOFOLLOW):
  it points at something prngd did not write;
* a regular file with more than one hard link is never written: the other
  name would keep, or see, what prngd writes (a seed kept that way could be
  credited twice);
* anything but a regular file (a FIFO, a device, a directory) is never opened
  for writing: opening a device or a FIFO may itself do something;
* a socket is replaced or removed only when nobody answers on it (connect()
  refused): a live server keeps its socket, whoever it is;
* beyond that, each file's own module asks for its own evidence, through
  `refusal`: a seed file in prngd's or PRNGD's format (seedfile.py), 0 or 1024
  bytes (exchange.py), a pid line naming no other live program (pidfile.py).

A refusal is one line in one style, "pidfile /x exists and is a FIFO, not a
pidfile; not replacing it", and leaves the thing as it was.

Standard library only; imports nothing of prngd.
"""

from __future__ import annotations

import logging
import os
import socket
import stat

# open() flags for a path prngd reads or writes: never through a link, never
# blocking on a FIFO, never taking a terminal as the controlling one.
SAFE_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link",
          stat.S_IFREG: "a regular file"}

log = logging.getLogger("prngd")


def describe(mode: int) -> str:
    """'a FIFO', 'a directory'... for an st_mode (from lstat, so a symbolic link is named as one)."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def lstat(path: str) -> os.stat_result | None:
    """What is at `path` itself (a link is not followed); None if nothing is."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def refusal(st: os.stat_result, noun: str) -> str | None:
    """Why the file with this stat (lstat or fstat) is not one prngd may write as `noun`, or None.

    `noun` names what prngd expected, with its article: "a pidfile".
    """
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link, never followed"
    if not stat.S_ISREG(st.st_mode):
        return f"is {describe(st.st_mode)}, not {noun}"
    if st.st_nlink > 1:
        return f"has {st.st_nlink} hard links (another name shares its bytes)"
    return None


def refused(path: str, why: str, doing: str = "replacing") -> str:
    """The refusal: "/x exists and is a FIFO, not a pidfile; not replacing it" (the caller may name the file first)."""
    return f"{path} exists and {why}; not {doing} it"


def ours_by_owner(st: os.stat_result, user_uid: int | None = None) -> bool:
    """Whether root, prngd's euid or its -u user (`user_uid`) owns the file: who prngd writes as."""
    return st.st_uid in (0, os.geteuid(), user_uid)


# ---------------------------------------------------------------- the log file

LOG_TAIL = 4096  # how much of an existing log is looked at


def log_refusal(fd: int, user_uid: int | None = None) -> str | None:
    """Why the file open at `fd` is not a log prngd may append to, or None.

    A log is appended to, never replaced, so the rule is what it may be written
    into: a regular file with one link (never a device, a FIFO or another
    name's file), owned by root or prngd's user (not someone else's file), not
    executable (not a program or a script), and text: no NUL byte in its last
    4 KiB (not a key, a seed or a binary).  `fd` must be open for reading.
    """
    st = os.fstat(fd)
    why = refusal(st, "a log file")
    if why:
        return why
    if not ours_by_owner(st, user_uid):
        return f"belongs to uid {st.st_uid}, neither root nor prngd's user"
    if st.st_mode & 0o111:
        return f"is executable (mode {stat.S_IMODE(st.st_mode):04o}), not a log file"
    tail = os.pread(fd, LOG_TAIL, max(0, st.st_size - LOG_TAIL))
    if b"\0" in tail:
        return "holds binary data, not a log file"
    return None


# ---------------------------------------------------------------- Unix sockets

def _answered(path: str) -> str | None:
    """None if nobody answers on the socket at `path`; otherwise why it must be kept."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
        return "another daemon is already serving on this socket"
    except ConnectionRefusedError:
        return None  # stale: bound once, nobody listening now
    except BlockingIOError:
        return "another daemon is already serving on this socket (its queue is full)"
    except FileNotFoundError:
        return None  # gone meanwhile
    except OSError as e:
        # Permission denied, a datagram socket...: we cannot show it is stale.
        return f"cannot tell whether anyone serves on it ({e.strerror or e})"
    finally:
        probe.close()


def clear_socket_path(path: str) -> str | None:
    """Make room to bind a socket at `path`: None once nothing is there (a stale socket removed).

    Otherwise the one line saying why not (a live server's socket, anything
    that is not a socket), and `path` is left as it was.
    """
    st = lstat(path)
    if st is None:
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return refused(path, f"is {describe(st.st_mode)}, not a socket")
    why = _answered(path)
    if why:
        return f"{path}: {why}; not replacing it"
    _unlink(path)
    return None


def remove_stale_socket(path: str) -> bool:
    """At exit: remove the socket at `path` if nobody answers on it (ours, now closed).

    A socket another server bound there meanwhile, or anything else, stays (and
    one line says why).  True if removed.
    """
    st = lstat(path)
    if st is None:
        return False
    why = f"it is {describe(st.st_mode)}" if not stat.S_ISSOCK(st.st_mode) else _answered(path)
    if why is None:
        try:
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as e:
            why = f"it cannot be removed ({e.strerror})"
    log.info("left %s in place: %s", path, why)
    return False


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True
