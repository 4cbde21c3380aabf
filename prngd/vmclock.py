"""The VM generation counter of Linux's vmclock device (/dev/vmclock0, Linux 6.13+).

A hypervisor that offers vmclock (Firecracker, QEMU) publishes a page the
guest maps read-only: `struct vmclock_abi` of the Linux uapi header
include/uapi/linux/vmclock-abi.h.  Where the flag VM_GEN_COUNTER_PRESENT is
set, its `vm_generation_counter` changes each time the VM is loaded from a
snapshot, so two guests restored from one snapshot learn it at once, before
their clocks say anything.  The fields used here (little-endian):

    offset  size  field
    0       4     magic            0x4b4c4356 ("VCLK")
    4       4     size             of the region holding the structure
    12      4     seq_count        seqlock: odd while the hypervisor writes
    24      8     flags            bit 8 VM_GEN_COUNTER_PRESENT, bit 9 NOTIFICATION_PRESENT
    104     8     vm_generation_counter

With NOTIFICATION_PRESENT the device is also readable (poll) whenever
seq_count changes after the reader's last read(): the daemon waits on that
instead of polling.  Without it (or on a regular file laid out as the device,
which the tests use), the counter is compared at every pool refill and at the
daemon's clock check.  Missing, unreadable or not a vmclock: `open_vmclock`
returns None and says why at debug level; nothing else changes.
"""

from __future__ import annotations

import logging
import os
import stat
import struct

log = logging.getLogger("prngd")

DEFAULT_DEVICE = "/dev/vmclock0"

MAGIC = 0x4B4C4356
FLAG_VM_GEN_COUNTER_PRESENT = 1 << 8
FLAG_NOTIFICATION_PRESENT = 1 << 9

_MAGIC_SIZE = struct.Struct("<II")  # at 0
_SEQ = struct.Struct("<I")  # at 12
_FLAGS = struct.Struct("<Q")  # at 24
_GENERATION = struct.Struct("<Q")  # at 104
SEQ_OFFSET, FLAGS_OFFSET, GENERATION_OFFSET = 12, 24, 104
ABI_SIZE = 112  # through vm_generation_counter

# A seqlock read tries this often before it gives up for now (the hypervisor
# updates in microseconds; a seq_count stuck odd must not hang a refill).
SEQLOCK_TRIES = 1000


class VmClock:
    """A mapped vmclock page: `generation()` reads the counter under the seqlock."""

    def __init__(self, path: str, fd: int, page: mmap.mmap, notifies: bool) -> None:
        self.path = path
        self.fd = fd  # kept open: the device is polled on it, and read() re-arms the poll
        self._page = page
        self.notifies = notifies

    def _consistent(self, offset: int, fmt: struct.Struct):
        page = self._page
        for _ in range(SEQLOCK_TRIES):
            (before,) = _SEQ.unpack_from(page, SEQ_OFFSET)
            if before & 1:
                continue  # an update is in progress
            (value,) = fmt.unpack_from(page, offset)
            (after,) = _SEQ.unpack_from(page, SEQ_OFFSET)
            if before == after:
                return value
        return None

    def flags(self) -> int | None:
        return self._consistent(FLAGS_OFFSET, _FLAGS)

    def generation(self) -> int | None:
        """The VM generation counter, or None if no consistent read was had (tried again at the next check)."""
        return self._consistent(GENERATION_OFFSET, _GENERATION)

    def acknowledge(self) -> None:
        """After a notification: read() so that the device's poll waits for the next change."""
        try:
            os.pread(self.fd, ABI_SIZE, 0)
        except OSError:
            pass

    def close(self) -> None:
        self._page.close()
        os.close(self.fd)


def open_vmclock(path: str | None = DEFAULT_DEVICE) -> VmClock | None:
    """The vmclock at `path` if it carries a VM generation counter, else None (logged at debug level)."""
    if not path:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        log.debug("no VM generation detector: %s: %s", path, e.strerror)
        return None
    import mmap  # where the device exists only: most machines' starts do without it

    try:
        st = os.fstat(fd)
        device = stat.S_ISCHR(st.st_mode)
        length = mmap.PAGESIZE if device else st.st_size
        if length < ABI_SIZE:
            raise ValueError(f"{length} bytes, too short for struct vmclock_abi")
        page = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ)
    except (OSError, ValueError) as e:
        os.close(fd)
        log.debug("no VM generation detector: %s: %s", path, getattr(e, "strerror", None) or e)
        return None
    clock = VmClock(path, fd, page, False)
    magic, _ = _MAGIC_SIZE.unpack_from(page, 0)
    flags = clock.flags()
    problem = None
    if magic != MAGIC:
        problem = f"magic 0x{magic:08x}, not a vmclock"
    elif flags is None:
        problem = "seq_count stays odd"
    elif not flags & FLAG_VM_GEN_COUNTER_PRESENT:
        problem = "the hypervisor offers no VM generation counter"
    if problem:
        log.debug("no VM generation detector: %s: %s", path, problem)
        clock.close()
        return None
    # Regular files are always readable: only the device's own poll means a change.
    clock.notifies = device and bool(flags & FLAG_NOTIFICATION_PRESENT)
    return clock
