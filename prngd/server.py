"""The daemon: one trio nursery owns the listeners, the connections and every background task.

Start-up order is what makes the first byte safe: the pool is seeded from the
kernel, the seed file is mixed in and replaced, and only then do the sockets
open.  Shutdown is cancellation: stop accepting, let replies in flight finish
(bounded), save the seed, remove the sockets.

The connection loop is the hot path.  It drives plain non-blocking sockets with
`trio.lowlevel.wait_readable` / `wait_writable` rather than trio's stream layer,
which costs about 40% per request at these sizes (shared/performance.md), and
it answers every request decoded from one read with one send.
"""

from __future__ import annotations

import errno
import gc
import ipaddress
import resource
import logging
import os
import signal
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import trio
from trio.lowlevel import checkpoint, wait_readable, wait_writable

from prngd import __version__, egd
from prngd.egd import encode_nonblocking
from prngd.config import Settings

log = logging.getLogger("prngd")

# One read takes at most this much; with the output cap below it bounds a
# connection's memory to well under 100 KiB whatever the client sends.
RECV_SIZE = 4096
OUTPUT_FLUSH = 65536
SHUTDOWN_GRACE = 2.0


class StartupError(Exception):
    """The daemon cannot start (socket busy, bad address...); the message is for the user."""


@dataclass
class Listener:
    spec: str  # as the user wrote it, for messages
    sock: socket.socket
    path: str | None  # Unix socket file we created and must remove (None: TCP, or systemd's)
    is_unix: bool


class Counters:
    __slots__ = ("current", "total", "rejected", "bytes_served", "requests", "protocol_errors", "sending")

    def __init__(self) -> None:
        self.current = 0
        self.total = 0
        self.rejected = 0
        self.bytes_served = 0
        self.requests = [0] * 5  # indexed by command byte
        self.protocol_errors = 0
        self.sending = 0  # connections blocked mid-reply (shutdown waits for them)


class RateLimitedLog:
    """At most `burst` lines per `period` seconds; the rest are counted and summarised."""

    def __init__(self, logger: logging.Logger, burst: int = 10, period: float = 10.0) -> None:
        self.logger, self.burst, self.period = logger, burst, period
        self.window_start = 0.0
        self.count = 0
        self.suppressed = 0

    def warning(self, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self.window_start >= self.period:
            if self.suppressed:
                self.logger.warning("%d more protocol errors not logged", self.suppressed)
            self.window_start, self.count, self.suppressed = now, 0, 0
        if self.count < self.burst:
            self.count += 1
            self.logger.warning(msg, *args)
        else:
            self.suppressed += 1


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


def peer_uid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except OSError:
        return None
    return int.from_bytes(creds[4:8], "little", signed=True) if len(creds) >= 8 else None


# ---------------------------------------------------------------- listeners

def _unix_socket_in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def bind_unix(path: str, mode: int) -> socket.socket:
    """Bind a Unix stream socket at `path`, replacing a stale one, refusing a live one."""
    p = Path(path)
    if not p.parent.exists():
        p.parent.mkdir(parents=True, mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise StartupError(f"{path} exists and is not a socket; not replacing it")
        if _unix_socket_in_use(path):
            raise StartupError(f"{path}: another daemon is already serving on this socket")
        os.unlink(path)  # stale: nobody answers on it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bind under a umask that gives no more than `mode`, so the socket is never
    # briefly wider open than asked; then set the exact mode.
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise StartupError(f"cannot bind {path}: {e.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    sock.listen(socket.SOMAXCONN)
    sock.setblocking(False)
    return sock


def bind_tcp(address: egd.Address, allow_remote: bool) -> list[socket.socket]:
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise StartupError(f"{address}: {e.strerror}") from None
    socks = []
    seen = set()
    for family, type_, proto, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6) or sockaddr[:2] in seen:
            continue
        seen.add(sockaddr[:2])
        if not ipaddress.ip_address(sockaddr[0]).is_loopback and not allow_remote:
            raise StartupError(f"{address} is not a loopback address; set allow_remote = yes to listen there")
        s = socket.socket(family, type_, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind(sockaddr)
        except OSError as e:
            s.close()
            for other in socks:
                other.close()
            msg = "another daemon is already serving on this port" if e.errno == errno.EADDRINUSE else e.strerror
            raise StartupError(f"{address}: {msg}") from None
        s.listen(socket.SOMAXCONN)
        s.setblocking(False)
        socks.append(s)
    if not socks:
        raise StartupError(f"{address}: no usable address")
    return socks


def open_listeners(settings: Settings, inherited: list[socket.socket] | None = None) -> list[Listener]:
    if inherited:
        out = []
        for s in inherited:
            s.setblocking(False)
            is_unix = s.family == socket.AF_UNIX
            name = s.getsockname()
            spec = name if isinstance(name, str) else f"{name[0]}:{name[1]}"
            out.append(Listener(spec or "<inherited>", s, None, is_unix))
        return out
    out: list[Listener] = []
    try:
        for spec in settings.resolved_sockets():
            try:
                address = egd.parse_address(spec)
            except ValueError as e:
                raise StartupError(str(e)) from None
            if address.is_unix:
                sock = bind_unix(address.path, settings.socket_mode)
                out.append(Listener(spec, sock, address.path, True))
            else:
                for sock in bind_tcp(address, settings.allow_remote):
                    out.append(Listener(spec, sock, None, False))
    except BaseException:
        close_listeners(out)
        raise
    return out


def close_listeners(listeners: list[Listener]) -> None:
    for lst in listeners:
        lst.sock.close()
        if lst.path:
            try:
                os.unlink(lst.path)
            except OSError:
                pass


# ---------------------------------------------------------------- the daemon

class Daemon:
    def __init__(self, settings: Settings, *, reload: Callable[[], Settings] | None = None,
                 on_ready: Callable[[], None] | None = None, pool=None) -> None:
        self.settings = settings
        self._reload = reload
        self._on_ready = on_ready
        self.pool = pool if pool is not None else make_pool(settings)
        self.counters = Counters()
        self.started = time.monotonic()
        self.pid_reply = egd.encode_pid()
        self.listeners: list[Listener] = []
        self.sources: list = []
        self.seed_state = None
        self.exchange_state = None  # an exchange.ExchangeState once the updater runs
        self._seeded = trio.Event()
        self._errors = RateLimitedLog(logging.getLogger("prngd.protocol"))
        self._trusted_uids = frozenset([0, *settings.trusted_uids])
        self._idle_done: trio.Event | None = None
        self._gather_scope: trio.CancelScope | None = None
        self._accept_scope: trio.CancelScope | None = None

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
            sources.seed_from_kernel(self.pool, self.settings.kernel_bytes)
        path = self.settings.resolved_seedfile()
        if path:
            from prngd import seedfile

            try:
                self.seed_state = seedfile.load_and_replace(path, self.pool)
            except seedfile.ForeignFile as e:
                raise StartupError(str(e)) from None

    async def run(self, listeners: list[Listener] | None = None) -> None:
        """Serve until cancelled or signalled; always ends with a seed save."""
        self.raise_fd_limit()
        if listeners is None:
            from prngd import systemd

            # Bound first, so a busy socket fails before the seed file is
            # touched; nothing is accepted until the pool is seeded below.
            listeners = open_listeners(self.settings, systemd.listen_fds())
        self.listeners = listeners
        admin_sock = None
        # The receiver stays open until the last seed save: a second SIGTERM
        # during shutdown is queued here instead of killing us mid-save.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1) as sigs:
            try:
                self.seed_before_serving()
                admin_sock = self._open_admin()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._signals, sigs, nursery.cancel_scope)
                    if self.pool.seeded:
                        self._seeded.set()
                    else:
                        self.pool.on_seeded = self._became_seeded
                    await nursery.start(self._gatherers)
                    async with trio.open_nursery() as conns:
                        self._accept_scope = trio.CancelScope()
                        nursery.start_soon(self._accept_all, conns, self._accept_scope)
                        self._start_background(nursery, admin_sock)
                        self._announce()
                        # The connection nursery lives until shutdown cancels
                        # the outer scope; this waits for that.
                        await trio.sleep_forever()
            finally:
                await self._finish(admin_sock)

    def _start_background(self, nursery: trio.Nursery, admin_sock) -> None:
        if self.seed_state is not None:
            nursery.start_soon(self._seed_saver)
        if self.settings.exchange_file:
            nursery.start_soon(self._exchange_updater)
        if admin_sock is not None:
            from prngd import admin

            nursery.start_soon(admin.serve_admin, admin_sock, self.status)
        nursery.start_soon(self._low_entropy_monitor)
        nursery.start_soon(self._clock_watch)

    def _announce(self) -> None:
        # Everything built so far lives as long as the daemon.  Moving it out of
        # the collector's sight turns ~20 ms full-collection pauses under load
        # into sub-millisecond ones (benchmarks: p99.9 of new-connection clients).
        gc.freeze()
        specs = ", ".join(dict.fromkeys(lst.spec for lst in self.listeners))
        log.info("serving on %s (generator %s, %s, entropy %d bits)", specs, self.pool.generator_name,
                 "seeded" if self.pool.seeded else "NOT seeded yet", self.pool.entropy_bits)
        from prngd import systemd

        systemd.notify(f"READY=1\nSTATUS=serving on {specs}\nMAINPID={os.getpid()}")
        if self._on_ready:
            self._on_ready()

    def _open_admin(self) -> trio.socket.SocketType | None:
        path = self.settings.resolved_admin_socket()
        if not path:
            return None
        try:
            raw = bind_unix(path, self.settings.admin_mode)
        except (StartupError, OSError) as e:
            log.warning("admin socket disabled: %s", e)
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
        if self.seed_state is not None:
            from prngd import seedfile

            # Shutdown is already cancelling us; the last save must still run.
            with trio.CancelScope(shield=True):
                await self._save_seed(seedfile)
        log.info("stopped")

    # ------------------------------------------------------------ background tasks

    def _became_seeded(self) -> None:
        # Called by the pool the moment credited input first reaches its seed
        # threshold (kernel not ready at start): blocked 0x02 readers go on.
        log.info("pool seeded (entropy %d bits)", self.pool.entropy_bits)
        self._seeded.set()

    async def _gatherers(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Runs the sources; SIGHUP restarts it with the reloaded ones."""
        from prngd import sources

        task_status.started()
        while True:
            with trio.CancelScope() as scope:
                self._gather_scope = scope
                await sources.gather(self.pool, self.sources, self.settings)
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
            elif sig == signal.SIGUSR1:
                log.info("statistics: %s", self.status())

    async def _drain(self) -> None:
        """Stop accepting, then give replies in flight a bounded time to leave."""
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for lst in self.listeners:
            # New connections are refused from here on, not queued; waiters on
            # the socket are told before it closes, as trio requires.
            trio.lowlevel.notify_closing(lst.sock)
            lst.sock.close()
        if self.counters.sending:
            self._idle_done = trio.Event()
            with trio.move_on_after(SHUTDOWN_GRACE):
                await self._idle_done.wait()

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
        if new.resolved_sockets() != old.resolved_sockets():
            log.warning("socket changes take effect only at restart")
        self.settings = new
        self._trusted_uids = frozenset([0, *new.trusted_uids])
        logging.getLogger().setLevel(new.log_level.upper())
        from prngd import sources

        self.sources = sources.build_sources(new)
        if self._gather_scope is not None:
            self._gather_scope.cancel()
        self.pool.reseed()
        log.info("configuration reloaded (%d sources, max_connections %d), pool reseeded",
                 len(self.sources), new.max_connections)
        systemd.notify("READY=1")

    # ------------------------------------------------------------ accepting

    async def _accept_all(self, conns: trio.Nursery, scope: trio.CancelScope) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                for lst in self.listeners:
                    nursery.start_soon(self._accept_loop, lst, conns)

    async def _accept_loop(self, lst: Listener, conns: trio.Nursery) -> None:
        sock = lst.sock
        counters = self.counters
        accepted_in_a_row = 0
        while True:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                accepted_in_a_row = 0
                try:
                    await wait_readable(sock)
                except trio.ClosedResourceError:
                    return
                continue
            except OSError as e:
                if sock.fileno() == -1 or e.errno == errno.EBADF:
                    return
                # Out of descriptors or memory: say so and let clients retry.
                log.error("accept on %s failed: %s", lst.spec, e.strerror)
                await trio.sleep(0.1)
                continue
            if counters.current >= self.settings.max_connections:
                conn.close()
                counters.rejected += 1
                continue
            conn.setblocking(False)
            if not lst.is_unix:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            counters.current += 1
            counters.total += 1
            conns.start_soon(self._connection, conn, lst.is_unix)
            accepted_in_a_row += 1
            if accepted_in_a_row >= 64:  # a connect storm must not starve the clients already here
                accepted_in_a_row = 0
                await checkpoint()

    # ------------------------------------------------------------ one connection

    def _trusted(self, sock: socket.socket, is_unix: bool) -> bool:
        if not is_unix:
            return self.settings.trust_tcp
        uid = peer_uid(sock)
        return uid is not None and uid in self._trusted_uids

    async def _connection(self, sock: socket.socket, is_unix: bool) -> None:
        try:
            await self._serve(sock, is_unix)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left mid-reply: its loss only
        except egd.ProtocolError as e:
            self.counters.protocol_errors += 1
            self._errors.warning("closing connection: %s", e)
        except OSError as e:
            self._errors.warning("closing connection: %s", e)
        except Exception:
            # A bug must cost one connection, never the daemon.
            log.exception("unexpected error on a connection")
        finally:
            sock.close()
            self.counters.current -= 1

    async def _serve(self, sock: socket.socket, is_unix: bool) -> None:
        pool = self.pool
        counters = self.counters
        requests = counters.requests
        decoder = egd.Decoder()
        recv = sock.recv
        settings = self.settings
        trusted = None
        # A connection-per-request client (OpenSSL, OpenSSH) has usually sent
        # its request before we accepted: try it before parking in epoll.
        ready = True
        while True:
            if ready:
                ready = False
            elif decoder.pending:
                with trio.move_on_after(settings.request_timeout) as cs:
                    await wait_readable(sock)
                if cs.cancelled_caught:
                    self._errors.warning("closing connection: request incomplete after %gs",
                                         settings.request_timeout)
                    return
            elif settings.idle_timeout > 0:
                with trio.move_on_after(settings.idle_timeout) as cs:
                    await wait_readable(sock)
                if cs.cancelled_caught:
                    return
            else:
                # Wait before reading: a request-response client has nothing for
                # us yet.  This always parks in the scheduler, even when data is
                # waiting, so a client that floods us cannot starve the others.
                await wait_readable(sock)
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                continue
            if not data:
                return
            decoder.feed(data)
            out: list[bytes] = []
            size = 0
            seeded = pool.seeded  # once per read: it never goes back to False
            next_request = decoder.next_request
            try:
                # next_request() rather than iteration: no StopIteration per read.
                while (req := next_request()) is not None:
                    cmd = req.command
                    requests[cmd] += 1
                    if cmd == 2:  # blocking read
                        n = req.n
                        if not n:
                            continue
                        if not seeded:
                            if out:
                                await self._send(sock, b"".join(out))
                                out.clear()
                                size = 0
                            await self._seeded.wait()
                            seeded = True
                        reply = pool.read(n)
                    elif cmd == 1:  # non-blocking read: the full count once seeded
                        n = req.n
                        if seeded:
                            reply = encode_nonblocking(pool.read(n))
                        else:
                            # Only when even the kernel was not ready at start.
                            reply = b"\x00"
                            n = 0
                    elif cmd == 0:
                        reply = egd.encode_entropy_level(pool.entropy_bits)
                        n = 0
                    elif cmd == 4:
                        reply = self.pid_reply
                        n = 0
                    else:  # write entropy: mixed always, credited only from trusted peers
                        if req.data:
                            if trusted is None:
                                trusted = self._trusted(sock, is_unix)
                            pool.add("egd-write" if trusted else "egd-write-untrusted", req.data,
                                     min(req.bits, 8 * len(req.data)) if trusted else 0)
                        continue
                    counters.bytes_served += n
                    out.append(reply)
                    size += len(reply)
                    if size >= OUTPUT_FLUSH:  # bounds what one connection holds
                        await self._send(sock, b"".join(out))
                        out.clear()
                        size = 0
            except egd.ProtocolError:
                # Requests before the bad byte are answered, then the close.
                if out:
                    await self._send(sock, b"".join(out))
                raise
            if out:
                # Inline, not `await self._send(...)`: one reply per read is the
                # common case and a coroutine per reply costs ~3% of the daemon.
                reply = out[0] if len(out) == 1 else b"".join(out)
                try:
                    sent = sock.send(reply)
                except BlockingIOError:
                    sent = 0
                if sent != len(reply):
                    await self._send_rest(sock, reply, sent)

    async def _send(self, sock: socket.socket, data: bytes) -> None:
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent != len(data):
            await self._send_rest(sock, data, sent)

    async def _send_rest(self, sock: socket.socket, data: bytes, sent: int) -> None:
        """Slow path: the client is not reading as fast as we answer."""
        view = memoryview(data)[sent:]
        self.counters.sending += 1
        try:
            while view:
                await wait_writable(sock)
                try:
                    view = view[sock.send(view):]
                except BlockingIOError:
                    pass
        finally:
            self.counters.sending -= 1
            if not self.counters.sending and self._idle_done is not None:
                self._idle_done.set()

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
                            "max": self.settings.max_connections},
            "requests": {egd.COMMAND_NAMES[i]: c.requests[i] for i in range(5)},
            "bytes_served": c.bytes_served,
            "protocol_errors": c.protocol_errors,
            "seedfile": self.seed_state.as_dict() if self.seed_state is not None else None,
            "exchange": (self.exchange_state.as_dict()
                         if self.exchange_state is not None and self.settings.exchange_file else None),
            "sockets": [lst.spec for lst in self.listeners],
        }
