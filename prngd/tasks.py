"""What runs beside the connections: the sources, the savers, the watches, the history and the admin endpoint.

Serving a request needs none of this, so the daemon imports this module only
once its first turn of requests is answered (psutil, the sources and the
admin endpoint are a tenth of a start otherwise), or, with -u, just before
the drop: after it the Python installation may be out of the user's reach
(a virtualenv under /root), and every module a task, a SIGHUP or SIGUSR1 may
need is here or below.

Each task is a trio loop over a lower module's work and takes the daemon
(prngd.server.Daemon): its settings change at SIGHUP, so every round reads
them afresh.  Blocking file work runs in worker threads, on a PoolProxy.
"""

from __future__ import annotations

import functools
import logging

import trio

from prngd import admin, exchange, history, sources, summary
from prngd.gather import gather
from prngd.pool import PoolProxy

log = logging.getLogger("prngd")

__all__ = ["start", "build_sources", "render_summary"]


def start(daemon, nursery: trio.Nursery, admin_sock) -> None:
    """Build the sources and start every task beside the connections."""
    daemon.sources = build_sources(daemon)
    nursery.start_soon(gatherers, daemon)
    if daemon.seed_state is not None:
        nursery.start_soon(seed_saver, daemon)
    if daemon.settings.exchange_file:
        nursery.start_soon(exchange_updater, daemon)
    if admin_sock is not None:
        nursery.start_soon(functools.partial(admin.serve_admin, admin_sock, daemon.status, daemon.history.as_dict,
                                             reseed=daemon.reseed_now, max_handlers=daemon.admin_handlers))
    nursery.start_soon(low_entropy_monitor, daemon)
    nursery.start_soon(history.sample_every, daemon.history, daemon.status,
                       lambda: daemon.settings.history_interval)
    nursery.start_soon(clock_watch, daemon)


def build_sources(daemon) -> list:
    """The sources the daemon's settings ask for, keeping the totals of those it had (a reload), the
    start seed booked as the kernel source's first sample."""
    built = sources.build_sources(daemon.settings, previous=daemon.sources)
    kernel = next((s for s in built if s.kind == "kernel"), None)
    if kernel is not None and daemon.kernel_seed is not None:
        kernel.book(*daemon.kernel_seed)
        daemon.kernel_seed = None  # booked once: a reload's sources carry the totals on
    return built


def render_summary(daemon) -> str:
    """The summary `prngd status` prints (SIGUSR1 logs it)."""
    return summary.render(daemon.status(), daemon.history.as_dict())


async def gatherers(daemon) -> None:
    """Runs the sources; SIGHUP restarts it with the reloaded ones (it cancels daemon.gather_scope)."""
    while True:
        with trio.CancelScope() as scope:
            daemon.gather_scope = scope
            await gather(daemon.pool, daemon.sources, daemon.settings)
            await trio.sleep_forever()


async def seed_saver(daemon) -> None:
    while True:
        await trio.sleep(daemon.settings.seed_save_interval)
        await daemon.save_seed()


async def exchange_updater(daemon) -> None:
    while True:
        path = daemon.settings.exchange_file
        if path:
            if daemon.exchange_state is None or daemon.exchange_state.path != path:
                daemon.exchange_state = exchange.ExchangeState(path)  # SIGHUP may name another file
            proxy = PoolProxy(daemon.pool, exchange.EXCHANGE_SIZE)
            await trio.to_thread.run_sync(exchange.update, path, proxy, daemon.exchange_state)
            proxy.apply(daemon.pool)
        await trio.sleep(daemon.settings.exchange_interval)


async def low_entropy_monitor(daemon, period: float = 30.0, checks: int = 10) -> None:
    # Operators asked to be told when entropy runs low.  Right after start
    # the estimate is climbing, so only an estimate that *stays* under
    # low_water_bits (`checks` checks in a row, 5 minutes by default) is
    # reported, once per episode.  (A source failing its health tests is
    # reported once by the sources module itself.)
    pool = daemon.pool
    under_for = 0
    while True:
        await trio.sleep(period)
        if pool.entropy_bits < daemon.settings.low_water_bits:
            under_for += 1
            if under_for == checks:
                log.warning("entropy estimate has stayed below low_water_bits %d for %.0f s (now %d bits)",
                            daemon.settings.low_water_bits, period * checks, pool.entropy_bits)
        else:
            if under_for >= checks:
                log.info("entropy estimate back to %d bits", pool.entropy_bits)
            under_for = 0


async def clock_watch(daemon, period: float = 5.0) -> None:
    # A machine resumed from suspend, or a VM restored from a snapshot (maybe
    # twice), holds the generator state of another moment.  The pool checks
    # the clocks (and the VM generation counter) at each refill; this catches
    # an idle daemon too.  One wakeup per period: idle CPU does not change.
    async with trio.open_nursery() as nursery:
        if daemon.vmclock is not None and daemon.vmclock.notifies:
            nursery.start_soon(vmclock_notifications, daemon)
        while True:
            await trio.sleep(period)
            await daemon.check_clocks()


async def vmclock_notifications(daemon) -> None:
    # The device is readable once the hypervisor changed the page (a restore
    # among others): a restored idle daemon reseeds at once, not a period later.
    while True:
        try:
            await trio.lowlevel.wait_readable(daemon.vmclock.fd)
        except OSError as e:  # a kernel whose vmclock cannot be polled: the period's checks remain
            log.debug("vmclock %s cannot be polled (%s); checked every few seconds", daemon.vmclock.path, e)
            return
        daemon.vmclock.acknowledge()
        await daemon.check_clocks()
