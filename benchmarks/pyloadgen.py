"""Pure-Python fallback of loadgen.c (same command line, same JSON), for machines without a C compiler.

    python3 -m benchmarks.pyloadgen (--unix PATH | --tcp HOST:PORT) --request HEX
        [--conns N] [--duration S] [--mode persistent|newconn] [--threads P] [--spread-src N]
    python3 -m benchmarks.pyloadgen (--unix PATH | --tcp HOST:PORT) --idle N

The connections are shared out over P worker processes (`--threads`, default:
the number of CPUs), each running a `selectors` loop with one request in
flight per connection.  It is much slower than the C generator: on a 2-core
machine it is likely to be the bottleneck, which the suite's ceiling figures
show.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import selectors
import socket
import sys
import time
from array import array


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(need, hard), hard))


def _address(args) -> tuple[int, object]:
    if args.unix:
        return socket.AF_UNIX, args.unix
    host, _, port = args.tcp.rpartition(":")
    return socket.AF_INET, (host, int(port))


def _reply_shape(req: bytes) -> tuple[int, int]:
    """(fixed reply length or -1 if a count byte says, N wanted by a 01 request or -1)."""
    if req[0] == 0:
        return 4, -1
    if req[0] == 1:
        return -1, req[1]
    if req[0] == 2:
        return req[1], -1
    if req[0] == 4:
        return -1, -1
    raise SystemExit("request must be 00, 01 N, 02 N or 04")


def _worker(family, addr, req: bytes, nconns: int, t_end: float, newconn: bool, spread: int,
            src_offset: int, out) -> None:
    fixed, want = _reply_shape(req)
    sel = selectors.DefaultSelector()
    lat = array("d")
    st = dict(bytes=0, short=0, zero=0, eof=0, overlong=0, errors=0, connect_errors=0,
              connect_retries=0, inflight_at_end=0, stalled_at_end=0)
    src = [src_offset]

    class Conn:
        __slots__ = ("sock", "t0", "buf", "expect", "done")

    def connect(c: Conn) -> bool:
        s = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if spread:
                s.bind((f"127.0.0.{2 + src[0] % spread}", 0))
                src[0] += 1
        try:
            s.connect(addr)
        except OSError:
            st["connect_errors"] += 1
            s.close()
            return False
        s.setblocking(False)
        c.sock = s
        sel.register(s, selectors.EVENT_READ, c)
        return True

    def start(c: Conn) -> None:
        c.t0 = time.monotonic()
        c.buf = b""
        c.expect = fixed
        if newconn or c.sock is None:
            if c.sock is not None:
                sel.unregister(c.sock)
                c.sock.close()
                c.sock = None
            if not connect(c):
                return
        try:
            c.sock.send(req)
        except OSError:
            st["errors"] += 1

    conns = []
    for _ in range(nconns):
        c = Conn()
        c.sock, c.done = None, False
        if not newconn:
            connect(c)
        conns.append(c)
    for c in conns:
        start(c)
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        for c in conns:
            if c.sock is None and not c.done:
                start(c)
        for key, _ in sel.select(min(0.05, t_end - now)):
            c = key.data
            try:
                data = c.sock.recv(1024)
            except BlockingIOError:
                continue
            except OSError:
                data = None
                st["errors"] += 1
            if not data:
                if data is not None:
                    st["eof"] += 1
                st["short"] += 1
                sel.unregister(c.sock)
                c.sock.close()
                c.sock = None
                continue
            if c.expect < 0 and not c.buf:
                count = data[0]
                c.expect = 1 + count
                if want >= 0 and count < want:
                    st["short"] += 1
                    st["zero"] += count == 0
            c.buf += data
            if len(c.buf) < c.expect:
                continue
            t = time.monotonic()
            if len(c.buf) > c.expect:
                st["overlong"] += 1
            if t <= t_end:
                lat.append(t - c.t0)
                st["bytes"] += c.expect - (1 if fixed < 0 else 0)
            if t >= t_end:
                c.done = True
                continue
            start(c)
    now = time.monotonic()
    for c in conns:
        if c.sock is not None and not c.done:
            st["inflight_at_end"] += 1
            st["stalled_at_end"] += now - c.t0 > 1.0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    st["cpu_user_s"], st["cpu_sys_s"] = ru.ru_utime, ru.ru_stime
    out.send((st, lat.tobytes()))
    out.close()


def _pct(v: list[float], p: float) -> float:
    if not v:
        return 0.0
    return v[min(len(v) - 1, int(p * len(v)))] * 1e6


def run(args) -> dict:
    req = bytes.fromhex(args.request)
    family, addr = _address(args)
    procs = max(1, min(args.threads or os.cpu_count() or 1, args.conns))
    _raise_nofile(args.conns * 2 + 64)
    ctx = multiprocessing.get_context("fork")
    t_start = time.monotonic() + 0.2  # let the workers fork and connect
    t_end = t_start + args.duration
    pipes, workers = [], []
    for i in range(procs):
        n = args.conns // procs + (i < args.conns % procs)
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(family, addr, req, n, t_end, args.mode == "newconn",
                                              args.spread_src, i * 1000, w))
        p.start()
        w.close()
        pipes.append(r)
        workers.append(p)
    stats, lat = [], array("d")
    for r in pipes:
        st, raw = r.recv()
        stats.append(st)
        lat.frombytes(raw)
    for p in workers:
        p.join()
    wall = time.monotonic() - t_start
    v = sorted(lat)
    total = {k: sum(s[k] for s in stats) for k in stats[0]}
    return {
        "generator": "python", "request": args.request, "mode": args.mode, "conns": args.conns,
        "threads": procs, "duration_s": args.duration, "wall_s": wall, "requests": len(v),
        "rps": len(v) / args.duration, "bytes": total["bytes"], "mbps": total["bytes"] / args.duration / 1e6,
        **{k: int(total[k]) for k in ("short", "zero", "eof", "overlong", "errors", "connect_errors",
                                      "connect_retries", "inflight_at_end", "stalled_at_end")},
        "mean_us": (sum(v) / len(v) * 1e6) if v else 0.0,
        "p50_us": _pct(v, 0.5), "p90_us": _pct(v, 0.9), "p99_us": _pct(v, 0.99), "p999_us": _pct(v, 0.999),
        "max_us": v[-1] * 1e6 if v else 0.0,
        "cpu_user_s": total["cpu_user_s"], "cpu_sys_s": total["cpu_sys_s"],
    }


def idle(args) -> int:
    family, addr = _address(args)
    _raise_nofile(args.idle + 64)
    socks, failed = [], 0
    for _ in range(args.idle):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(addr)
            s.sendall(b"\x00")
            got = b""
            while len(got) < 4:
                chunk = s.recv(4 - len(got))
                if not chunk:
                    raise ConnectionError
                got += chunk
            socks.append(s)
        except OSError:
            failed += 1
    print(json.dumps({"open": len(socks), "failed": failed}), flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.pyloadgen")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--unix")
    g.add_argument("--tcp")
    p.add_argument("--request")
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--mode", choices=("persistent", "newconn"), default="persistent")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--spread-src", type=int, default=0)
    p.add_argument("--idle", type=int, default=-1)
    args = p.parse_args(argv)
    if args.idle >= 0:
        return idle(args)
    if not args.request:
        p.error("--request is required")
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
