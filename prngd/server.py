"""The daemon: one trio nursery owns the listeners, the connections and every background task.

Start-up order is what makes the first byte safe: the pool is seeded from the
kernel, the seed file is mixed in and replaced, and only then do the sockets
open.  Shutdown is cancellation: stop accepting, let replies in flight finish
(bounded), save the seed, remove the sockets.

The connections are served by one task, `driver.Driver`, that drives
every EGD connection as a state machine in one epoll set (see that module);
the admin socket, the sources, the savers and the signals are ordinary trio
tasks beside it.  After start-up, `gc.freeze()` moves everything built so far
out of the collector's sight (see `_announce`).
"""

from __future__ import annotations

import gc
import resource
import logging
import os
import signal
import time
from typing import Callable

import trio

from prngd import __version__, egd, history
from prngd.config import Settings
from prngd.driver import Counters, Driver
from prngd.listeners import Listener, StartupError, bind_unix, close_listeners, open_listeners
from prngd.pidfile import remove_pidfile, write_pidfile

log = logging.getLogger("prngd")

SHUTDOWN_GRACE = 2.0


def make_pool(settings: Settings):
    from prngd.pool import Pool

    return Pool(generator=settings.generator, drbg_hash=settings.drbg_hash,
                prediction_resistance=settings.prediction_resistance, pool_bits=settings.pool_bits,
                reseed_bits=settings.reseed_bits, reseed_interval=settings.reseed_interval)


class PoolProxy:
    """What a worker thread may touch of the pool.

    The pool is not thread-safe and lives in the trio thread.  Blocking file
    work (seed saves, the exchange file) runs in worker threads, so it gets
    bytes drawn beforehand and its additions are applied when it returns.
    """

    def __init__(self, pool, prefetch: int) -> None:
        self.seeded = pool.seeded
        self.entropy_bits = pool.entropy_bits
        self._data = bytearray(pool.read(prefetch, allow_unseeded=True))
        self._adds: list[tuple[str, bytes, float]] = []

    def read(self, n: int, *, allow_unseeded: bool = False) -> bytes:
        if n > len(self._data):
            raise RuntimeError(f"PoolProxy holds {len(self._data)} bytes, {n} asked")
        out = bytes(self._data[:n])
        self._data[:n] = bytes(n)  # served bytes are not kept
        del self._data[:n]
        return out

    def add(self, source: str, data: bytes, bits: float = 0) -> None:
        self._adds.append((source, bytes(data), bits))

    def apply(self, pool) -> None:
        for source, data, bits in self._adds:
            pool.add(source, data, bits)
        self._adds.clear()
        self._data[:] = bytes(len(self._data))


def _preload_modules() -> None:
    """Import now every module of prngd the daemon may import later.

    After a drop to -u USER the Python installation may be out of USER's
    reach (a virtualenv under /root): what is not imported by then never will be.
    """
    import importlib
    import pkgutil

    import prngd

    for module in pkgutil.iter_modules(prngd.__path__):
        if module.name not in ("cli", "__main__"):  # nothing imports the command line
            importlib.import_module(f"prngd.{module.name}")


# ---------------------------------------------------------------- the daemon

class Daemon:
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
        self.history = history.History(settings.history_interval)
        self.connections = Driver(settings, self.pool, self.counters, self.pid_reply)
        self._gather_scope: trio.CancelScope | None = None
        self._pidfile: str | None = None  # written by us, removed at stop
        self._machine = None  # identity.Identity the seed file is bound to (read as root, before -u)

    # ------------------------------------------------------------ start-up

    def raise_fd_limit(self) -> None:
        """Room for max_connections: the usual soft limit of 1024 descriptors is not."""
        wanted = self.settings.max_connections + 64  # listeners, seed and log files, threads
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft >= wanted:
            return
        new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            log.warning("only %d file descriptors allowed (hard limit): fewer than max_connections %d will fit",
                        new, self.settings.max_connections)

    def seed_before_serving(self) -> None:
        """Everything that must happen before the first byte leaves."""
        from prngd import sources

        self.sources = sources.build_sources(self.settings)
        if self.settings.kernel:
            # Whenever the kernel's generator is ready this seeds the pool at
            # once, so 0x01 answers its full count from the first request.
            kernel = next((s for s in self.sources if s.kind == "kernel"), None)
            sources.seed_from_kernel(self.pool, self.settings.kernel_bytes, kernel)
        path = self.settings.resolved_seedfile()
        if path:
            from prngd import seedfile

            try:
                self.seed_state = seedfile.load_and_replace(path, self.pool, self._machine)
            except seedfile.ForeignFile as e:
                raise StartupError(str(e)) from None

    async def run(self, listeners: list[Listener] | None = None) -> None:
        """Serve until cancelled or signalled; always ends with a seed save."""
        self.raise_fd_limit()
        self._self_test()
        self._check_runtime_dir()
        if listeners is None:
            from prngd import systemd

            # Bound first, so a busy socket fails before the seed file is
            # touched; nothing is accepted until the pool is seeded below.
            listeners = open_listeners(self.settings, systemd.listen_fds())
        self.listeners = listeners
        try:
            self._claim_files()
        except BaseException:
            close_listeners(listeners)
            raise
        admin_sock = None
        # The receiver stays open until the last seed save: a second SIGTERM
        # during shutdown is queued here instead of killing us mid-save.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1) as sigs:
            try:
                # Root binds and writes what only root may; the seed file is
                # then read and replaced as the user we switch to.
                admin_sock = self._open_admin()
                if self.settings.resolved_seedfile():
                    from prngd.identity import machine_identity

                    # Before the drop: the DMI product UUID is readable by root only.
                    self._machine = machine_identity()
                self._drop_privileges()
                self.seed_before_serving()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._signals, sigs, nursery.cancel_scope)
                    if not self.pool.seeded:
                        self.pool.on_seeded = self._became_seeded
                    await nursery.start(self._gatherers)
                    # Until shutdown cancels the nursery: cancelling it closes every connection.
                    nursery.start_soon(self.connections.run, self.listeners)
                    self._start_background(nursery, admin_sock)
                    self._announce()
            finally:
                await self._finish(admin_sock)

    def _self_test(self) -> None:
        from prngd import selftest

        try:
            took = selftest.run()
        except selftest.SelfTestFailure as e:
            raise StartupError(f"{e}; refusing to start") from None
        log.debug("self-tests passed in %.1f ms", took * 1000)

    def _check_runtime_dir(self) -> None:
        from prngd import config, privileges

        directory = config.fallback_runtime_dir_in_use(self.settings)
        if directory:
            try:
                privileges.ensure_private_dir(directory)
            except privileges.PrivilegeError as e:
                raise StartupError(str(e)) from None

    def _drop_privileges(self) -> None:
        if not self.settings.user:
            return
        from prngd import privileges

        _preload_modules()
        try:
            user = privileges.lookup(self.settings.user)
            privileges.check_can_drop(user)
            seed = self.settings.resolved_seedfile()
            if seed:
                privileges.give_seed_directory(seed, user)
            privileges.drop(user)
        except privileges.PrivilegeError as e:
            raise StartupError(str(e)) from None
        except OSError as e:
            raise StartupError(f"cannot switch to user {self.settings.user}: {e}") from None

    def _start_background(self, nursery: trio.Nursery, admin_sock) -> None:
        if self.seed_state is not None:
            nursery.start_soon(self._seed_saver)
        if self.settings.exchange_file:
            nursery.start_soon(self._exchange_updater)
        if admin_sock is not None:
            from prngd import admin

            nursery.start_soon(admin.serve_admin, admin_sock, self.status, self.history.as_dict)
        nursery.start_soon(self._low_entropy_monitor)
        nursery.start_soon(history.sample_every, self.history, self.status, lambda: self.settings.history_interval)
        nursery.start_soon(self._clock_watch)

    def _announce(self) -> None:
        # Everything built so far lives as long as the daemon.  Moving it out of
        # the collector's sight turns ~20 ms full-collection pauses under load
        # into sub-millisecond ones (benchmarks: p99.9 of new-connection clients).
        gc.freeze()
        self._served = True
        specs = ", ".join(dict.fromkeys(lst.spec for lst in self.listeners))
        log.info("serving on %s (generator %s, %s, entropy %d bits)", specs, self.pool.generator_name,
                 "seeded" if self.pool.seeded else "NOT seeded yet", self.pool.entropy_bits)
        from prngd import systemd

        systemd.notify(f"READY=1\nSTATUS=serving on {specs}\nMAINPID={os.getpid()}")
        if self._on_ready:
            self._on_ready()

    def _claim_files(self) -> None:
        """Before the seed file is touched: the pidfile written, the exchange file identified.

        Either holding something prngd did not write stops the start (StartupError),
        leaving it as it was: a typo must cost nothing.
        """
        from prngd import exchange

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
        return trio.socket.from_stdlib_socket(raw)

    async def _finish(self, admin_sock) -> None:
        from prngd import systemd

        systemd.notify("STOPPING=1")
        close_listeners(self.listeners)
        if admin_sock is not None:
            admin_sock.close()
            try:
                os.unlink(self._admin_path)
            except OSError:
                pass
        if self._pidfile:
            remove_pidfile(self._pidfile)
        if self.settings.user:
            # After the drop, a socket or pidfile in a directory only root may
            # write (/var/run) stays.
            left = [p for p in [*(lst.path for lst in self.listeners), getattr(self, "_admin_path", None),
                                self._pidfile] if p and os.path.lexists(p)]
            if left:
                log.info("left %s in place: user %s may not remove them; the next start replaces them",
                         ", ".join(left), self.settings.user)
        if self.seed_state is not None:
            from prngd import seedfile

            # Shutdown is already cancelling us; the last save must still run.
            with trio.CancelScope(shield=True):
                await self._save_seed(seedfile)
        if self._served:
            log.info("stopped")

    # ------------------------------------------------------------ background tasks

    def _became_seeded(self) -> None:
        # Called by the pool the moment credited input first reaches its seed
        # threshold (kernel not ready at start): parked 0x02 readers go on.
        log.info("pool seeded (entropy %d bits)", self.pool.entropy_bits)
        self.connections.wake()

    async def _gatherers(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Runs the sources; SIGHUP restarts it with the reloaded ones."""
        from prngd.gather import gather

        task_status.started()
        while True:
            with trio.CancelScope() as scope:
                self._gather_scope = scope
                await gather(self.pool, self.sources, self.settings)
                await trio.sleep_forever()

    async def _save_seed(self, seedfile) -> bool:
        path = self.settings.resolved_seedfile()
        proxy = PoolProxy(self.pool, seedfile.SEED_BYTES)
        ok = await trio.to_thread.run_sync(seedfile.save, path, proxy, self.seed_state)
        proxy.apply(self.pool)
        return ok

    async def _seed_saver(self) -> None:
        from prngd import seedfile

        while True:
            await trio.sleep(self.settings.seed_save_interval)
            await self._save_seed(seedfile)

    async def _exchange_updater(self) -> None:
        from prngd import exchange

        while True:
            path = self.settings.exchange_file
            if path:
                if self.exchange_state is None or self.exchange_state.path != path:
                    self.exchange_state = exchange.ExchangeState(path)  # SIGHUP may name another file
                proxy = PoolProxy(self.pool, exchange.EXCHANGE_SIZE)
                await trio.to_thread.run_sync(exchange.update, path, proxy, self.exchange_state)
                proxy.apply(self.pool)
            await trio.sleep(self.settings.exchange_interval)

    async def _low_entropy_monitor(self, period: float = 30.0, checks: int = 10) -> None:
        # Operators asked to be told when entropy runs low.  Right after start
        # the estimate is climbing, so only an estimate that *stays* under
        # low_water_bits (`checks` checks in a row, 5 minutes by default) is
        # reported, once per episode.  (A source failing its health tests is
        # reported once by the sources module itself.)
        under_for = 0
        while True:
            await trio.sleep(period)
            if self.pool.entropy_bits < self.settings.low_water_bits:
                under_for += 1
                if under_for == checks:
                    log.warning("entropy estimate has stayed below low_water_bits %d for %.0f s (now %d bits)",
                                self.settings.low_water_bits, period * checks, self.pool.entropy_bits)
            else:
                if under_for >= checks:
                    log.info("entropy estimate back to %d bits", self.pool.entropy_bits)
                under_for = 0

    async def _clock_watch(self, period: float = 5.0) -> None:
        # A machine resumed from suspend, or a VM restored from a snapshot (maybe
        # twice), holds the generator state of another moment.  The pool checks
        # the clocks at each refill; this catches an idle daemon too.  One wakeup
        # per period: idle CPU does not change.
        while True:
            await trio.sleep(period)
            events = self.pool.check_clocks()
            for reason in events:
                log.info("%s: pool reseeded with fresh kernel randomness", reason)
            if events and self.seed_state is not None:
                # Copies of a restored VM also share the seed file on its disk:
                # each replaces it now with output of its own reseeded pool.
                from prngd import seedfile

                await self._save_seed(seedfile)

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
                from prngd import summary

                for line in summary.render(self.status(), self.history.as_dict()).splitlines():
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
        from prngd import systemd

        systemd.notify("RELOADING=1")
        try:
            new = self._reload() if self._reload else self.settings
        except Exception as e:  # a bad file must not take the daemon down
            log.error("reload failed, keeping the old configuration: %s", e)
            systemd.notify("READY=1")
            return
        old = self.settings
        if new.exchange_file and new.exchange_file != old.exchange_file:
            from prngd import exchange

            problem = exchange.identify(new.exchange_file)
            if problem:
                log.error("reload failed, keeping the old configuration: exchange file %s", problem)
                systemd.notify("READY=1")
                return
        if new.resolved_sockets() != old.resolved_sockets():
            log.warning("socket changes take effect only at restart")
        if new.log_file != old.log_file or new.pidfile != old.pidfile:
            log.warning("log_file and pidfile changes take effect only at restart")
        self.settings = new
        self.connections.configure(new)
        logging.getLogger().setLevel(new.log_level.upper())
        from prngd import sources

        self.sources = sources.build_sources(new)
        if self._gather_scope is not None:
            self._gather_scope.cancel()
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
