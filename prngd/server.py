"""The daemon: one trio nursery owns the listeners, the connections and every background task.

Start-up order is what makes the first byte safe: the sockets are bound (so
clients queue from then on), the self-tests pass, the pool is seeded from the
kernel, the seed file is mixed in and replaced, and only then is anything
accepted.  What runs beside the connections (prngd.tasks: the sources, the
savers, the admin endpoint) is imported and started once the first turn of
requests is answered.  A SIGINT or SIGTERM at any instant of this stops it
quietly (prngd.startsignals).  Shutdown is cancellation: stop accepting, let
replies in flight finish (bounded), save the seed, remove the sockets.

The connections are served by one task, `driver.Driver`, that drives
every EGD connection as a state machine in one epoll set (see that module);
the admin socket, the sources, the savers and the signals are ordinary trio
tasks beside it.  After start-up, `gc.freeze()` moves everything built so far
out of the collector's sight (see `_announce`).
"""

from __future__ import annotations

import gc
import logging
import os
import resource
import signal
import time
from typing import Callable

import trio

from prngd import (__version__, config, egd, exchange, history, ownfile, privileges, seedfile, selftest, startsignals,
                   systemd, vmclock)
from prngd.config import Settings
from prngd.driver import Counters, Driver
from prngd.identity import machine_identity
from prngd.kernel import seed_from_kernel
from prngd.listeners import Listener, StartupError, bind_unix, close_listeners, open_listeners
from prngd.pidfile import remove_pidfile, write_pidfile
from prngd.pool import Pool, PoolProxy

log = logging.getLogger("prngd")

SHUTDOWN_GRACE = 2.0
ADMIN_HANDLERS = 8  # admin connections handled at once (prngd.admin refuses more): their own descriptors
OWN_DESCRIPTORS = 64  # listeners, epoll, seed, log and exchange files, worker threads


def descriptors_wanted(settings: Settings) -> int:
    """Descriptors for max_connections EGD clients, the admin handlers and the daemon's own files."""
    return settings.max_connections + ADMIN_HANDLERS + OWN_DESCRIPTORS


def make_pool(settings: Settings) -> Pool:
    return Pool(generator=settings.generator, drbg_hash=settings.drbg_hash,
                prediction_resistance=settings.prediction_resistance, pool_bits=settings.pool_bits,
                reseed_bits=settings.reseed_bits, reseed_interval=settings.reseed_interval)


# ---------------------------------------------------------------- the daemon

class Daemon:
    admin_handlers = ADMIN_HANDLERS  # counted in descriptors_wanted()

    def __init__(self, settings: Settings, *, reload: Callable[[], Settings] | None = None,
                 on_ready: Callable[[], None] | None = None, pool=None) -> None:
        self.settings = settings
        self._reload = reload
        self._on_ready = on_ready
        self._served = False  # a start that fails says only why, not also "stopped"
        self.pool = pool if pool is not None else make_pool(settings)
        self.counters = Counters()
        self.started = time.monotonic()
        self.pid_reply = egd.encode_pid()
        self.listeners: list[Listener] = []
        self.sources: list = []
        self.seed_state = None
        self.exchange_state = None  # an exchange.ExchangeState once the updater runs
        self.kernel_seed: tuple[bool, float] | None = None  # (ready, bits) of the start seed, until booked
        self.history = history.History(settings.history_interval)
        self.connections = Driver(settings, self.pool, self.counters, self.pid_reply)
        self.gather_scope: trio.CancelScope | None = None  # the gatherers' (prngd.tasks), cancelled at SIGHUP
        self._pidfile: str | None = None  # written by us, removed at stop
        self._machine = None  # identity.Identity the seed file is bound to (read as root, before -u)
        self.vmclock = None  # a vmclock.VmClock the pool watches, where the machine has one
        # Bumped at each restore (or resume) reseed, detected or requested: feed-kernel follows it.
        self.restore_generation = 0

    # ------------------------------------------------------------ start-up

    def raise_fd_limit(self, settings: Settings | None = None) -> bool:
        """Room for max_connections, the admin handlers and our own files: the usual soft limit of 1024 is not.

        For `settings` (default: the daemon's).  Returns whether they fit
        under the hard limit; at start a warning says when they do not.
        """
        settings = settings or self.settings
        wanted = descriptors_wanted(settings)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft >= wanted:
            return True
        new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted and settings is self.settings:
            log.warning("only %d file descriptors allowed (hard limit): fewer than max_connections %d will fit",
                        new, settings.max_connections)
        return new >= wanted

    def seed_before_serving(self) -> None:
        """Everything that must happen before the first byte leaves."""
        if self.settings.kernel:
            # Whenever the kernel's generator is ready this seeds the pool at
            # once, so 0x01 answers its full count from the first request.
            self.kernel_seed = seed_from_kernel(self.pool, self.settings.kernel_bytes)
        path = self.settings.resolved_seedfile()
        if path:
            try:
                self.seed_state = seedfile.load_and_replace(path, self.pool, self._machine)
            except seedfile.ForeignFile as e:
                raise StartupError(str(e)) from None

    async def run(self, listeners: list[Listener] | None = None) -> None:
        """Serve until cancelled or signalled; always ends with a seed save."""
        admin_sock = None
        # Opened first: from here on SIGINT and SIGTERM wait in the receiver
        # until the connections are served, then stop them as usual, and one
        # that came earlier (prngd.startsignals) stops the start here.  It
        # stays open until the last seed save: a second SIGTERM during
        # shutdown is queued here instead of killing us mid-save.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1) as sigs:
            try:
                stop = startsignals.stop_requested()
                if stop:
                    log.info("received %s while starting, stopping", stop.name)
                    return
                self.raise_fd_limit()
                self._check_runtime_dir()
                if listeners is None:
                    # Bound first, so a busy socket fails before the seed file is
                    # touched, and clients queue from here on while the start goes
                    # on; nothing is accepted until the pool is seeded below.
                    listeners = open_listeners(self.settings, systemd.listen_fds_with_names())
                self.listeners = listeners
                self._self_test()
                self._claim_files()
                # Root binds and writes what only root may; the seed file is
                # then read and replaced as the user we switch to.
                admin_sock = self._open_admin()
                self._watch_vm_generation()  # the device may be root's only
                if self.settings.resolved_seedfile():
                    # Before the drop: the DMI product UUID is readable by root only.
                    self._machine = machine_identity()
                self._drop_privileges()
                self.seed_before_serving()
                async with trio.open_nursery() as nursery:
                    if not self.pool.seeded:
                        self.pool.on_seeded = self._became_seeded
                    # Until shutdown cancels the nursery: cancelling it closes every connection.
                    # Started once it has answered what queued during the start.
                    await nursery.start(self.connections.run, self.listeners)
                    # Only now: a stop drains a driver that has its listeners in hand.
                    nursery.start_soon(self._signals, sigs, nursery.cancel_scope)
                    self._tasks().start(self, nursery, admin_sock)
                    self._announce()
            finally:
                await self._finish(admin_sock)

    def _self_test(self) -> None:
        try:
            took = selftest.run()
        except selftest.SelfTestFailure as e:
            raise StartupError(f"{e}; refusing to start") from None
        log.debug("self-tests passed in %.1f ms", took * 1000)

    def _check_runtime_dir(self) -> None:
        directory = config.fallback_runtime_dir_in_use(self.settings)
        if directory:
            try:
                privileges.ensure_private_dir(directory)
            except privileges.PrivilegeError as e:
                raise StartupError(str(e)) from None

    def _tasks(self):
        """prngd.tasks: what runs beside the connections, imported on first use.

        Serving needs none of it (psutil, the sources, the admin endpoint: a
        tenth of the start), so it is imported once the first
        requests are answered, or before the drop to -u USER, after which the
        Python installation may be out of USER's reach.
        """
        from prngd import tasks

        return tasks

    def _drop_privileges(self) -> None:
        if not self.settings.user:
            return
        self._tasks()
        try:
            user = privileges.lookup(self.settings.user)
            privileges.check_can_drop(user)
            seed = self.settings.resolved_seedfile()
            if seed:
                # Before anything of it is given away: a key at -s must keep its owner.
                seedfile.check(seed, user.uid)
                s = self.settings
                privileges.give_seed_directory(seed, user, own_files=(s.log_file, s.exchange_file, s.pidfile))
            privileges.drop(user)
        except (privileges.PrivilegeError, seedfile.ForeignFile) as e:
            raise StartupError(str(e)) from None
        except OSError as e:
            raise StartupError(f"cannot switch to user {self.settings.user}: {e}") from None

    def _announce(self) -> None:
        # Everything built so far lives as long as the daemon.  Moving it out of
        # the collector's sight turns ~20 ms full-collection pauses under load
        # into sub-millisecond ones (benchmarks: p99.9 of new-connection clients).
        # The `prngd` command kept the collector off until now (prngd/__main__.py).
        gc.freeze()
        gc.enable()
        self._served = True
        specs = ", ".join(dict.fromkeys(lst.spec for lst in self.listeners))
        log.info("serving on %s (generator %s, %s, entropy %d bits)", specs, self.pool.generator_name,
                 "seeded" if self.pool.seeded else "NOT seeded yet", self.pool.entropy_bits)
        systemd.notify(f"READY=1\nSTATUS=serving on {specs}\nMAINPID={os.getpid()}")
        if self._on_ready:
            self._on_ready()

    def _claim_files(self) -> None:
        """Before the seed file is touched: the pidfile written, the exchange file identified.

        Either holding something prngd did not write stops the start (StartupError),
        leaving it as it was: a typo must cost nothing.
        """
        if self.settings.exchange_file:
            problem = exchange.identify(self.settings.exchange_file)
            if problem:
                raise StartupError(f"exchange file {problem}")
        if self.settings.pidfile:
            write_pidfile(self.settings.pidfile)
            self._pidfile = self.settings.pidfile

    def _open_admin(self) -> trio.socket.SocketType | None:
        path = self.settings.resolved_admin_socket()
        if not path:
            return None
        try:
            raw = bind_unix(path, self.settings.admin_mode)
        except (StartupError, OSError) as e:
            hint = "; set admin_socket to a shorter path" if "-byte limit" in str(e) else ""
            log.warning("admin socket disabled (no status or metrics): %s%s", e, hint)
            return None
        self._admin_path = path
        if self.settings.user:
            # The daemon's user must reach its own status (README, Munin): bound as root, given to that user.
            try:
                privileges.give_socket(path, privileges.lookup(self.settings.user))
            except (privileges.PrivilegeError, OSError) as e:
                log.warning("admin socket %s stays root's: %s", path, e)
        return trio.socket.from_stdlib_socket(raw)

    async def _finish(self, admin_sock) -> None:
        systemd.notify("STOPPING=1")
        close_listeners(self.listeners)
        if admin_sock is not None:
            admin_sock.close()
            ownfile.remove_stale_socket(self._admin_path)
        if self._pidfile:
            remove_pidfile(self._pidfile)
        if self.settings.user:
            # After the drop, a pidfile in a directory only root may write
            # (/var/run) stays; sockets left say so themselves (ownfile).
            left = [p for p in [self._pidfile] if p and os.path.lexists(p)]
            if left:
                log.info("left %s in place: user %s may not remove them; the next start replaces them",
                         ", ".join(left), self.settings.user)
        if self.seed_state is not None:
            # Shutdown is already cancelling us; the last save must still run.
            with trio.CancelScope(shield=True):
                await self.save_seed()
        if self._served:
            log.info("stopped")

    # ------------------------------------------------------------ background tasks

    def _became_seeded(self) -> None:
        # Called by the pool the moment credited input first reaches its seed
        # threshold (kernel not ready at start): parked 0x02 readers go on.
        log.info("pool seeded (entropy %d bits)", self.pool.entropy_bits)
        self.connections.wake()

    async def save_seed(self) -> bool:
        """Replace the seed file from the pool (in a worker thread); False if the save failed."""
        path = self.settings.resolved_seedfile()
        proxy = PoolProxy(self.pool, seedfile.SEED_BYTES)
        ok = await trio.to_thread.run_sync(seedfile.save, path, proxy, self.seed_state)
        proxy.apply(self.pool)
        return ok

    def _watch_vm_generation(self) -> None:
        device = self.settings.vmclock_device
        self.vmclock = vmclock.open_vmclock(vmclock.DEFAULT_DEVICE if device is None else device)
        if self.vmclock is not None:
            self.pool.watch_generation("vmclock", self.vmclock.generation)

    async def check_clocks(self) -> None:
        """The pool's clocks and VM generation looked at (prngd.tasks.clock_watch): a restore reseeds."""
        events = self.pool.check_clocks()
        if events:
            await self._restored(events)

    async def _restored(self, reasons: list[str]) -> bool | None:
        """After a restore reseed: one line a reason, the generation bumped, the seed file
        rewritten (its save's success; None without a seed file)."""
        for reason in reasons:
            log.info("%s: pool reseeded with fresh kernel randomness", reason)
        self.restore_generation += len(reasons)
        if self.seed_state is None:
            return None
        # Copies of a restored VM also share the seed file on its disk:
        # each replaces it now with output of its own reseeded pool.
        return await self.save_seed()

    async def reseed_now(self, uid: int) -> str:
        """`prngd reseed` (the admin socket, asked by `uid`): what a detected restore does, now."""
        self.pool.reseed_from_kernel()
        saved = await self._restored([f"reseed asked by uid {uid} (prngd reseed)"])
        seed = {None: "no seed file", True: "seed file rewritten", False: "seed file NOT rewritten (see the log)"}
        return (f"pid {os.getpid()}: pool reseeded with fresh kernel randomness ({self.pool.stats()['reseeds']} "
                f"reseeds, restore generation {self.restore_generation}); {seed[saved]}")

    async def _signals(self, sigs, scope: trio.CancelScope) -> None:
        async for sig in sigs:
            if sig in (signal.SIGTERM, signal.SIGINT):
                log.info("received %s, stopping", signal.Signals(sig).name)
                await self._drain()
                scope.cancel()
                return
            if sig == signal.SIGHUP:
                self.reload()
            elif sig == signal.SIGUSR1:  # the summary `prngd status` prints, a log line a line
                for line in self._tasks().render_summary(self).splitlines():
                    log.info("statistics: %s", line)

    async def _drain(self) -> None:
        """Stop accepting, then give replies in flight a bounded time to leave."""
        self.connections.stop_accepting()
        for lst in self.listeners:
            # New connections are refused from here on, not queued; waiters on
            # the socket are told before it closes, as trio requires.
            trio.lowlevel.notify_closing(lst.sock)
            lst.sock.close()
        await self.connections.drain(SHUTDOWN_GRACE)

    def reload(self) -> None:
        """SIGHUP: re-read the configuration, keep every connection, reseed."""
        systemd.notify("RELOADING=1")
        try:
            new = self._reload() if self._reload else self.settings
        except Exception as e:  # a bad file must not take the daemon down
            log.error("reload failed, keeping the old configuration: %s", e)
            systemd.notify("READY=1")
            return
        old = self.settings
        if new.max_connections > old.max_connections and not self.raise_fd_limit(new):
            # Raised at start for the old cap; a new one past the hard limit would fail at accept.
            log.warning("max_connections %d needs %d file descriptors, more than the hard limit %d: "
                        "keeping max_connections %d", new.max_connections, descriptors_wanted(new),
                        resource.getrlimit(resource.RLIMIT_NOFILE)[1], old.max_connections)
            new = new.replace(max_connections=old.max_connections)
        if new.exchange_file and new.exchange_file != old.exchange_file:
            problem = exchange.identify(new.exchange_file)
            if problem:
                log.error("reload failed, keeping the old configuration: exchange file %s", problem)
                systemd.notify("READY=1")
                return
        if new.resolved_sockets() != old.resolved_sockets():
            log.warning("socket changes take effect only at restart")
        if new.log_file != old.log_file or new.pidfile != old.pidfile or new.vmclock_device != old.vmclock_device:
            log.warning("log_file, pidfile and vmclock_device changes take effect only at restart")
        self.settings = new
        self.connections.configure(new)
        logging.getLogger().setLevel(new.log_level.upper())
        self.sources = self._tasks().build_sources(self)
        if self.gather_scope is not None:
            self.gather_scope.cancel()
        self.pool.reseed()
        log.info("configuration reloaded (%d sources, max_connections %d), pool reseeded",
                 len(self.sources), new.max_connections)
        systemd.notify("READY=1")

    # ------------------------------------------------------------ status

    def status(self) -> dict:
        c = self.counters
        pool_stats = self.pool.stats()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "seeded": self.pool.seeded,
            "entropy_bits": self.pool.entropy_bits,
            "low_entropy": self.pool.entropy_bits < self.settings.low_water_bits,
            "generator": self.pool.generator_name,
            "reseeds": pool_stats.get("reseeds", 0),
            "detectors": pool_stats.get("detectors", []),
            "restore_generation": self.restore_generation,
            "pool": pool_stats,
            "sources": [s.stats() for s in self.sources],
            "connections": {"current": c.current, "total": c.total, "rejected": c.rejected,
                            "rejected_by_reason": {"global_cap": c.rejected_global_cap,
                                                   "per_uid": c.rejected_per_uid},
                            "max": self.settings.max_connections,
                            "max_per_uid": self.connections.share},
            "requests": {egd.COMMAND_NAMES[i]: c.requests[i] for i in range(5)},
            "bytes_served": c.bytes_served,
            "protocol_errors": c.protocol_errors,
            "seedfile": self.seed_state.as_dict() if self.seed_state is not None else None,
            "exchange": (self.exchange_state.as_dict()
                         if self.exchange_state is not None and self.settings.exchange_file else None),
            "sockets": [lst.spec for lst in self.listeners],
        }
