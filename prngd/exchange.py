"""The exchange file: 1024 bytes that prngd, Postfix's tlsmgr and OpenSSL programs all stir.

Postfix's tlsmgr keeps such a file (tls_random_exchange_name): it locks it,
reads it into OpenSSL's pool, and writes 1024 fresh bytes back.  prngd does
the same every interval, so both can share one file:

    open    O_RDWR|O_CREAT|O_NOFOLLOW, mode 0600 (a symlink is refused)
    check   a regular file with one link (never write into a hard link
            someone made to another file), empty or exactly 1024 bytes:
            the size tlsmgr keeps ("its length is fixed at 1024 bytes",
            Postfix's tls_random_exchange_name) and prngd writes.  Anything
            else (a text file, FIFO, device, directory, a larger file) was
            not written by either and is never read or written; the daemon
            refuses to start on it (identify()).
    lock    flock(LOCK_EX): the lock tlsmgr takes on Linux; waited for up
            to `lock_timeout` seconds, so a stuck holder cannot wedge prngd
    read    up to 4096 bytes from offset 0, mixed into the pool with no
            credit: whoever else can write the file is not trusted
    write   1024 bytes of pool output at offset 0 (pwrite), fsync
    unlock  then close

Nothing is written while the pool is unseeded: OpenSSL's RAND_load_file
credits what it reads in full, so the file must never carry weak bytes.
An OS error is logged once per call and reported as False; it never raises.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time

from prngd import ownfile

log = logging.getLogger("prngd.exchange")

EXCHANGE_SIZE = 1024
MAX_READ = 4096
FILE_MODE = 0o600
LOCK_TIMEOUT = 10.0


def _lock(fd: int, timeout: float) -> None:
    """flock(LOCK_EX), giving up after `timeout` seconds (TimeoutError)."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(errno.EWOULDBLOCK, f"still locked by another process after {timeout:g} s") from None
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.02)


def _pread_all(fd: int, limit: int) -> bytes:
    buf = bytearray()
    while len(buf) < limit:
        chunk = os.pread(fd, limit - len(buf), len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class ExchangeState:
    """What the status command reports about the exchange file (a plain class: a
    dataclass's decoration was paid by every start)."""

    __slots__ = ("path", "updates", "failures", "last_error")

    def __init__(self, path: str) -> None:
        self.path = path
        self.updates = 0
        self.failures = 0
        self.last_error: str | None = None  # of the last update, None once an update succeeds

    def as_dict(self) -> dict:
        return {"path": self.path, "updates": self.updates, "failures": self.failures, "last_error": self.last_error}

    def __repr__(self) -> str:
        return f"ExchangeState({self.as_dict()!r})"


def _refusal(st: os.stat_result) -> str | None:
    """Why a file with this stat is not an exchange file, or None if it is one."""
    why = ownfile.refusal(st, "an exchange file")
    if why:
        return why
    if st.st_size not in (0, EXCHANGE_SIZE):
        return f"holds {st.st_size} bytes, not the {EXCHANGE_SIZE} of an exchange file"
    return None


def identify(path: str) -> str | None:
    """None if prngd may use `path` as its exchange file (absent, or one it or tlsmgr wrote).

    Otherwise one line saying what is there; the file is not touched.
    """
    try:
        st = ownfile.lstat(path)
    except OSError as e:
        return f"{path}: {e.strerror}"
    if st is None:
        parent = os.path.dirname(path) or "."
        if not os.path.isdir(parent):
            return f"{path}: directory {parent} does not exist"
        return None
    why = _refusal(st)
    return ownfile.refused(path, why) if why else None


def update(path: str, pool, state: ExchangeState | None = None, *, lock_timeout: float = LOCK_TIMEOUT) -> bool:
    """Lock, read, mix (uncredited), write 1024 fresh bytes, fsync, unlock.  False on an OS error."""
    path = str(path)
    ok = _update(path, pool, lock_timeout)
    if state is not None:
        if ok is True:
            state.updates += 1
            state.last_error = None
        else:
            state.failures += 1
            state.last_error = ok
    return ok is True


def _update(path: str, pool, lock_timeout: float) -> bool | str:
    """True, or the error that stopped the update (already logged)."""
    fd = -1
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | ownfile.SAFE_OPEN, FILE_MODE)
        why = _refusal(os.fstat(fd))
        if why:
            raise OSError(errno.EINVAL, f"it {why}: not an exchange file, left alone", path)
        _lock(fd, lock_timeout)
        why = _refusal(os.fstat(fd))  # another writer may have changed it while we waited
        if why:
            raise OSError(errno.EINVAL, f"it {why}: not an exchange file, left alone", path)
        old = _pread_all(fd, MAX_READ)
        if old:
            pool.add("exchange", old, 0)  # never credited: other writers are not trusted
        if not pool.seeded:
            log.debug("exchange file %s: mixed %d bytes; not rewritten while the pool is unseeded", path, len(old))
            return True
        _pwrite_all(fd, pool.read(EXCHANGE_SIZE), 0)
        os.fsync(fd)
        log.debug("exchange file %s: mixed %d bytes, wrote %d", path, len(old), EXCHANGE_SIZE)
        return True
    except OSError as e:
        text = e.strerror or str(e)
        if e.errno == errno.ELOOP:
            text = "it is a symbolic link: refused"
        log.warning("exchange file %s: update failed: %s", path, text)
        return text
    finally:
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass
            os.close(fd)
