"""The kernel's generator as prngd sees it: whether it is ready, and the pool's first seed from it.

Apart from the sources (prngd.sources, which need psutil and the gatherer)
because the first seed is taken before anything is served, and serving must
not wait for what it does not need.  Standard library only.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("prngd.sources")


def kernel_ready() -> bool:
    """Whether the kernel's CRNG is initialised: getrandom(1, GRND_NONBLOCK) succeeds.

    Without getrandom (very old kernels, seccomp filters) readiness cannot be
    told, and we answer False: kernel bytes are then mixed but not credited.
    """
    try:
        os.getrandom(1, os.GRND_NONBLOCK)
    except (AttributeError, OSError):  # BlockingIOError: not ready yet; ENOSYS: no getrandom
        return False
    return True


def seed_from_kernel(pool, nbytes: int = 32) -> tuple[bool, float]:
    """Add `nbytes` from the kernel to `pool` before anything is served; credited only if the kernel is ready.

    Returns (ready, bits credited): the daemon books them as the kernel
    source's first sample, so status shows the start credit under the kernel
    source rather than "0 samples, 0 bits".
    """
    ready = kernel_ready()
    data = os.urandom(nbytes)
    bits = 8.0 * len(data) if ready else 0.0
    pool.add("kernel", data, bits)
    log.debug("kernel seed: %d bytes, %.2f bits credited%s", len(data), bits,
              "" if ready else " (kernel generator not ready)")
    return ready, bits
