"""The benchmark run: prngd against the baseline servers, alternated and repeated, in one run.

    python3 -m benchmarks [--quick] [--duration S] [--reps N] [--out DIR] [--unix-only]
                          [--scenarios A,B] [--conns 1,8,50,200] ...

First prngd and the raw baseline are started alone, alternately, --starts times
each (timing exec to first byte).  Then each repetition starts fresh processes of
every server, warms them up, measures every cell (transport x scenario x
concurrency) on each server in turn, the order rotating between
repetitions; then it reads each server's peak RSS and its RSS with 1000 idle
connections open, and stops them.  Figures are medians over the
repetitions; short and zero replies are summed.  Results go to
DIR/benchmark.json, DIR/benchmark.md and (with matplotlib) DIR/benchmark.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import machine, report
from benchmarks.loadgen import HERE, ROOT, LoadGenerator, compile_c
from benchmarks.servers import (PR, Server, baseline_argv, compile_bytecode, free_tcp_port, prngd_argv, probe_pr,
                               raise_nofile)


@dataclass(frozen=True)
class Scenario:
    name: str
    request: str  # hex
    mode: str     # persistent | newconn
    label: str
    socket: str = "plain"  # "pr": prngd's Unix socket spelled PATH,pr (prediction resistance), prngd only
    like: str = ""         # for a prngd-only scenario: the scenario whose baseline and C cells it is compared to


SCENARIOS = {s.name: s for s in (
    Scenario("block255", "02ff", "persistent", "02 ff, blocking 255, persistent connections"),
    Scenario("nonblock255", "01ff", "persistent", "01 ff, non-blocking 255, persistent connections"),
    Scenario("postfix", "0120", "persistent", "01 20 on one long-lived connection per client (Postfix)"),
    Scenario("openssh", "0230", "newconn", "02 30, a new connection per request (OpenSSH)"),
    Scenario("openssl", "01ff", "newconn", "01 ff, a new connection per request (OpenSSL)"),
    Scenario("entropy", "00", "persistent", "00, entropy level, persistent connections"),
    Scenario("block255pr", "02ff", "persistent", "02 ff on prngd's prediction-resistance socket (PATH,pr), "
             "persistent connections; compared with the servers' block255 cells", socket="pr", like="block255"),
)}
CONCURRENCY = (1, 8, 50, 200)
TRANSPORTS = ("unix", "tcp")
HEADLINE = ("unix", "block255", 50)  # the cell of "prngd >= 0.8 x baseline"

PRNGD = "prngd"
BASELINE = "baseline_raw"       # the headline baseline: the faster minimal trio server
BASELINE_STREAM = "baseline_stream"
CEILING = "c_epoll"             # C server: the load generator's ceiling, not a baseline
SERVER_LABELS = {
    PRNGD: "prngd (python3 -m prngd -f -n, default settings)",
    BASELINE: "minimal trio server on raw non-blocking sockets + wait_readable, constant buffer (headline baseline)",
    BASELINE_STREAM: "minimal trio server on SocketStream receive_some/send_all, constant buffer",
    CEILING: "single-threaded C epoll server, static buffer (the reference: this machine's limit, and the load "
             "generator's ceiling)",
}
SUMMED = ("requests", "short", "zero", "eof", "overlong", "errors", "connect_errors", "stalled_at_end")
MEDIAN = ("rps", "mbps", "mean_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
          "server_cpu_s_per_1k", "loadgen_cpu_share", "other_cpu")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs, one repetition (the smoke test's mode)")
    p.add_argument("--duration", type=float, help="seconds per measurement (default 0.6; --quick 0.25)")
    p.add_argument("--reps", type=int, help="alternated repetitions on fresh processes, medians reported (default 5; --quick 1)")
    p.add_argument("--warmup", type=float, help="seconds of 02 ff x 50 load on each fresh server (default 1.0; --quick 0.2)")
    p.add_argument("--out", default=str(HERE / "results"), help="output directory (default benchmarks/results/)")
    p.add_argument("--unix-only", action="store_true", help="skip TCP")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, from {','.join(SCENARIOS)}")
    p.add_argument("--conns", default=",".join(map(str, CONCURRENCY)), help="comma-separated concurrencies")
    p.add_argument("--idle-conns", type=int, default=1000, help="idle connections for the RSS figure (default 1000)")
    p.add_argument("--starts", type=int, help="alternated fresh starts of prngd and the raw baseline for the exec to "
                   "first byte figure (default 15; --quick 3)")
    p.add_argument("--stream-baseline", choices=("none", "block255", "all"), default="block255",
                   help="where to measure the SocketStream baseline too (default: the block255 scenario)")
    p.add_argument("--no-ceiling", action="store_true", help="skip the C epoll server (load generator ceiling)")
    p.add_argument("--python-loadgen", action="store_true", help="use the pure-Python load generator")
    p.add_argument("--prngd-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the daemon (repeatable; default: none)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--quiet-wait", type=float, help="seconds to wait for a quiet machine before each measurement "
                   "(default 10; --quick 1)")
    p.add_argument("--quiet-threshold", type=float, default=0.2,
                   help="cores others may keep busy during a measurement before it is repeated (default 0.2)")
    p.add_argument("--retries", type=int, help="repeats of a disturbed measurement (default 2; --quick 0)")
    p.add_argument("--quiet-budget", type=float, help="total seconds the run may spend waiting for quiet and "
                   "repeating disturbed measurements (default 120; --quick 5)")
    a = p.parse_args(argv)
    a.duration = a.duration or (0.25 if a.quick else 0.6)
    a.reps = a.reps or (1 if a.quick else 5)
    a.starts = a.starts if a.starts is not None else (3 if a.quick else 15)
    a.warmup = a.warmup if a.warmup is not None else (0.2 if a.quick else 1.0)
    a.quiet_wait = a.quiet_wait if a.quiet_wait is not None else (1.0 if a.quick else 10.0)
    a.retries = a.retries if a.retries is not None else (0 if a.quick else 2)
    a.quiet_budget = a.quiet_budget if a.quiet_budget is not None else (5.0 if a.quick else 120.0)
    a.quiet_spent = 0.0
    a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for s in a.scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    a.conns = [int(c) for c in a.conns.split(",") if c.strip()]
    a.transports = ["unix"] if a.unix_only else list(TRANSPORTS)
    return a


def urandom_rate(seconds: float) -> float:
    """os.urandom(255) calls per second in this process."""
    n, urandom = 0, os.urandom
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(1000):
            urandom(255)
        n += 1000
        t = time.perf_counter()
        if t >= end:
            return n / (t - t0)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "prngd"],
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty(prngd/)" if dirty else "") if out.returncode == 0 else None
    except OSError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def measure_once(load: LoadGenerator, server: Server, transport: str, sc: Scenario, conns: int,
                 duration: float) -> dict:
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    kernel0, busy0, cpu0, t0 = machine.kernel_cpu_s(), machine.cpu_busy_s(), server.cpu_s(), time.monotonic()
    r = load.run(server.target(transport, sc.socket), sc.request, conns, duration, sc.mode)
    busy1, cpu1, wall = machine.cpu_busy_s(), server.cpu_s(), time.monotonic() - t0
    children1, kernel1 = resource.getrusage(resource.RUSAGE_CHILDREN), machine.kernel_cpu_s()
    loadgen_cpu = (children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime)
    r["server_cpu_s"] = cpu1 - cpu0
    r["server_cpu_s_per_1k"] = (cpu1 - cpu0) / r["requests"] * 1000 if r["requests"] else None
    r["loadgen_cpu_share"] = (r["cpu_user_s"] + r["cpu_sys_s"]) / r["duration_s"]
    r["kernel_cpu"] = (kernel1 - kernel0) / wall
    # Cores kept busy by everything else (other processes, steal) during the run.
    r["other_cpu"] = None if busy0 is None else max(
        0.0, (busy1 - busy0) - (cpu1 - cpu0) - loadgen_cpu - (kernel1 - kernel0)) / wall
    if not server.alive():
        raise RuntimeError(f"{server.name} died during {transport} {sc.name} x{conns}:\n{server.log()}")
    return r


def measure(load: LoadGenerator, server: Server, transport: str, sc: Scenario, conns: int, args) -> dict:
    """One measurement, on a machine as quiet as can be had; repeated when others disturbed it.

    Waiting and repeating stop once the run has spent --quiet-budget seconds on them.
    """
    tries = []
    for _ in range(1 + args.retries):
        waited = 0.0
        if args.quiet_spent < args.quiet_budget:
            _, waited = machine.wait_quiet(min(args.quiet_wait, args.quiet_budget - args.quiet_spent),
                                           args.quiet_threshold)
            args.quiet_spent += waited
        r = measure_once(load, server, transport, sc, conns, args.duration)
        r["waited_for_quiet_s"] = round(waited, 2)
        tries.append(r)
        if r["other_cpu"] is None or r["other_cpu"] <= args.quiet_threshold:
            break
        if args.quiet_spent >= args.quiet_budget:
            break
        args.quiet_spent += r["wall_s"]
    best = min(tries, key=lambda t: t["other_cpu"] or 0.0)
    best["attempts"] = len(tries)
    return best


def aggregate(runs: list[dict]) -> dict:
    out = {k: sum(r[k] for r in runs) for k in SUMMED}
    out.update({k: median([r.get(k) for r in runs]) for k in MEDIAN})
    out["rps_runs"] = [round(r["rps"], 1) for r in runs]
    out["max_other_cpu"] = max((r["other_cpu"] or 0.0) for r in runs)
    return out


def run(args: argparse.Namespace) -> dict:
    raise_nofile(max(8192, args.idle_conns * 2 + 256))
    compile_bytecode()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="prngd-bench-"))
    load = LoadGenerator(force_python=args.python_loadgen)
    cserver = None
    if not args.no_ceiling:
        cserver, cnote = compile_c("cserver")
        if cserver is None:
            print(f"[bench] no C ceiling server: {cnote}", file=sys.stderr)
    tcp = "tcp" in args.transports
    scenarios = [SCENARIOS[s] for s in args.scenarios]
    skipped = {}
    if any(sc.socket == "pr" for sc in scenarios):
        path = str(work / "probe-pr.sock")
        why = probe_pr(prngd_argv(path + PR, None, args.prngd_arg), path, logs / "prngd-probe-pr.log", work)
        if why:
            for sc in scenarios:
                if sc.socket == "pr":
                    print(f"[bench] {sc.name} skipped: {why}", file=sys.stderr)
                    skipped[sc.name] = why
            scenarios = [sc for sc in scenarios if sc.socket != "pr"]
    pr = any(sc.socket == "pr" for sc in scenarios)
    print(f"[bench] load generator: {load.kind} ({load.note}); {args.reps} x {args.duration:g} s per cell; "
          f"{len(args.transports)} transports x {len(scenarios)} scenarios x {len(args.conns)} concurrencies",
          file=sys.stderr)

    t_begin = time.monotonic()
    result: dict = {
        "meta": {
            "command": "python3 -m benchmarks " + " ".join(shlex.quote(a) for a in (args.argv or [])),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "kernel": platform.release(),
            "commit": git_commit(), "load_generator": load.kind, "load_generator_note": load.note,
            "duration_s": args.duration, "reps": args.reps, "warmup_s": args.warmup,
            "transports": args.transports, "scenarios": {s.name: s.label for s in scenarios},
            "requests": {s.name: s.request for s in scenarios}, "modes": {s.name: s.mode for s in scenarios},
            "like": {s.name: s.like for s in scenarios if s.like}, "skipped_scenarios": skipped,
            "starts": args.starts,
            "concurrency": args.conns, "servers": {}, "headline_baseline": BASELINE,
            "headline_cell": {"transport": HEADLINE[0], "scenario": HEADLINE[1], "conns": HEADLINE[2]},
            "notes": [
                "rps: replies completed per second; one request in flight per connection (closed loop)",
                "mbps: reply payload (random bytes, without the 01 count byte) in 10^6 bytes/s",
                "latency: send (or connect, for new-connection scenarios) to last reply byte",
                "short: 01 replies with a count byte below N, plus replies cut by a close or error",
                "TCP new-connection scenarios spread their source addresses over 127.0.0.2-201 "
                "so that TIME_WAIT ports do not run out",
            ],
        },
        "urandom_255_per_s": None,
        "startup": {}, "memory": {}, "cells": [], "checks": {},
    }
    result["meta"]["loadavg_start"] = machine.loadavg()
    machine.wait_quiet(args.quiet_wait, args.quiet_threshold)
    result["urandom_255_per_s"] = urandom_rate(0.3 if args.quick else 1.0)

    raw: dict[tuple, list[dict]] = {}
    startup: dict[str, list[float]] = {}
    memory: dict[str, list[dict]] = {}
    try:
        alternated = alternated_starts(args, work, logs, tcp)
        for rep in range(args.reps):
            servers = make_servers(args, work, logs, rep, tcp, cserver, pr)
            result["meta"]["servers"] = {s.name: {"label": SERVER_LABELS[s.name], "argv": s.argv} for s in servers}
            started: list[Server] = []
            try:
                k = rep % len(servers)  # each server starts first in turn, as the cells rotate
                for s in servers[k:] + servers[:k]:
                    if args.quiet_spent < args.quiet_budget:
                        args.quiet_spent += machine.wait_quiet(
                            min(args.quiet_wait, args.quiet_budget - args.quiet_spent), args.quiet_threshold)[1]
                    t = s.start()
                    started.append(s)
                    startup.setdefault(s.name, []).append(t)
                    print(f"[bench] rep {rep + 1}: {s.name} pid {s.pid}: exec to first byte {t * 1000:.0f} ms",
                          file=sys.stderr)
                mem0 = {s.name: s.rss_kb() for s in servers}
                if args.warmup > 0:
                    warm = SCENARIOS["block255"]
                    for s in servers:
                        load.run(s.target("unix"), warm.request, 50, args.warmup, warm.mode)
                for transport in args.transports:
                    for sc in scenarios:
                        if sc.socket == "pr" and transport != "unix":
                            continue  # a PATH,pr socket is a Unix socket
                        for conns in args.conns:
                            cell_servers = [s for s in servers if wanted(s.name, sc, conns, args)]
                            k = rep % len(cell_servers)
                            for s in cell_servers[k:] + cell_servers[:k]:
                                r = measure(load, s, transport, sc, conns, args)
                                raw.setdefault((transport, sc.name, conns, s.name), []).append(r)
                            last = [raw[(transport, sc.name, conns, s.name)][-1] for s in cell_servers]
                            line = "  ".join(f"{s.name} {r['rps']:>7.0f}/s p99 {r['p99_us'] / 1000:6.2f} ms"
                                             for s, r in zip(cell_servers, last))
                            line += f"  (others: {max(r['other_cpu'] or 0 for r in last):.2f} cores)"
                            print(f"[bench] rep {rep + 1} {transport:4} {sc.name:11} x{conns:<3} {line}", file=sys.stderr)
                for s in servers:
                    if s.name == CEILING:
                        continue
                    m = {"rss_start_kb": mem0[s.name], "rss_after_load_kb": s.rss_kb(), "peak_rss_kb": s.peak_rss_kb()}
                    if args.idle_conns > 0:
                        with load.idle(s.target("unix"), args.idle_conns) as info:
                            time.sleep(0.3)
                            m["idle_conns_open"] = info["open"]
                            m["idle_conns_failed"] = info["failed"]
                            m["rss_idle_kb"] = s.rss_kb()
                            m["cpu_idle_s_per_s"] = idle_cpu(s)
                        m["peak_rss_kb"] = s.peak_rss_kb()
                    memory.setdefault(s.name, []).append(m)
            finally:
                for s in started:
                    s.stop()
    finally:
        for p in work.iterdir():
            p.unlink(missing_ok=True)
        work.rmdir()

    result["startup"] = {}
    for name, ts in startup.items():
        runs = alternated.get(name) or ts  # the alternated starts where there are some
        result["startup"][name] = {"exec_to_first_byte_s": median(runs), "runs_s": [round(t, 4) for t in runs],
                                   "alternated": bool(alternated.get(name)),
                                   "rep_starts_s": [round(t, 4) for t in ts]}
    p, b = alternated.get(PRNGD), alternated.get(BASELINE)
    if p and b:
        result["startup_ratio"] = {"vs_" + BASELINE: median(p) / median(b),
                                   "pairs_median": median([x / y for x, y in zip(p, b)])}
    result["memory"] = {name: {k: median([m.get(k) for m in ms]) for k in ms[0]} for name, ms in memory.items()}
    for (transport, scen, conns, name), runs in raw.items():
        result["cells"].append({"transport": transport, "scenario": scen, "conns": conns, "server": name,
                                **aggregate(runs), "runs": runs})
    result["ratios"] = ratios(result["cells"], result["meta"]["like"])
    result["checks"] = checks(result, args)
    result["meta"]["elapsed_s"] = round(time.monotonic() - t_begin, 1)
    result["meta"]["quiet_wait_and_retry_s"] = round(args.quiet_spent, 1)
    result["meta"]["loadavg_end"] = machine.loadavg()
    return result


def alternated_starts(args, work: Path, logs: Path, tcp: bool) -> dict[str, list[float]]:
    """Exec to first byte of prngd and the raw baseline: fresh processes started one at a time,
    each stopped before the next starts, the order alternating (prngd first, then the
    baseline first), so neither gains from going first."""
    times: dict[str, list[float]] = {}
    for i in range(args.starts):
        pair = make_servers(args, work, logs, f"start{i}", tcp, None, only=(PRNGD, BASELINE))
        for s in (pair if i % 2 == 0 else pair[::-1]):
            if args.quiet_spent < args.quiet_budget:
                args.quiet_spent += machine.wait_quiet(
                    min(args.quiet_wait, args.quiet_budget - args.quiet_spent), args.quiet_threshold)[1]
            try:
                t = s.start()
            finally:
                s.stop()
            times.setdefault(s.name, []).append(t)
            print(f"[bench] start {i + 1}/{args.starts}: {s.name}: exec to first byte {t * 1000:.0f} ms",
                  file=sys.stderr)
    return times


def idle_cpu(s: Server, seconds: float = 0.5) -> float:
    """CPU seconds per second the server burns while its connections are idle."""
    c0 = s.cpu_s()
    time.sleep(seconds)
    return (s.cpu_s() - c0) / seconds


def wanted(name: str, sc: Scenario, conns: int, args) -> bool:
    if sc.socket == "pr":
        return name == PRNGD  # the others have no such socket: its row compares with their `like` cells
    if name == BASELINE_STREAM:
        return args.stream_baseline == "all" or (args.stream_baseline == "block255" and sc.name == "block255")
    if name == CEILING:  # the reference at 50 connections, and for the one-connection rows
        return conns in (1, 50) or conns == max(args.conns) and 50 not in args.conns
    return True


def make_servers(args, work: Path, logs: Path, rep, tcp: bool, cserver, pr: bool = False,
                 only: tuple[str, ...] = ()) -> list[Server]:
    def addr(tag: str) -> tuple[str, str | None]:
        return str(work / f"{tag}-{rep}.sock"), (f"127.0.0.1:{free_tcp_port()}" if tcp else None)

    servers = []
    u, t = addr("prngd")
    pu = str(work / f"prngd-pr-{rep}.sock") if pr else None
    servers.append(Server(PRNGD, prngd_argv(u, t, args.prngd_arg, pu), u, t, logs / f"prngd-{rep}.log", work, pu))
    u, t = addr("raw")
    servers.append(Server(BASELINE, baseline_argv("raw", u, t), u, t, logs / f"baseline_raw-{rep}.log", work))
    if only:
        return [s for s in servers if s.name in only]
    if args.stream_baseline != "none":
        u, t = addr("stream")
        servers.append(Server(BASELINE_STREAM, baseline_argv("stream", u, t), u, t,
                              logs / f"baseline_stream-{rep}.log", work))
    if cserver is not None:
        u, t = addr("c")
        servers.append(Server(CEILING, [str(cserver), u, *([t] if t else [])], u, t, logs / f"c_epoll-{rep}.log", work))
    return servers


def ratios(cells: list[dict], like: dict[str, str] | None = None) -> list[dict]:
    """prngd's rate (and p99) over each other server's in the same cell of the same run.

    A prngd-only scenario (the `,pr` socket) is compared with the others' cells of the
    scenario it is `like`, and with prngd's own there (`rps_vs_prngd_plain`)."""
    like = like or {}
    by = {(c["transport"], c["scenario"], c["conns"], c["server"]): c for c in cells}
    out = []
    for (transport, scen, conns, name), c in by.items():
        if name != PRNGD:
            continue
        row = {"transport": transport, "scenario": scen, "conns": conns}
        ref = like.get(scen, scen)
        if ref != scen:
            plain = by.get((transport, ref, conns, PRNGD))
            if plain and plain["rps"]:
                row["rps_vs_prngd_plain"] = c["rps"] / plain["rps"]
        for other in (BASELINE, BASELINE_STREAM, CEILING):
            b = by.get((transport, ref, conns, other))
            if b and b["rps"]:
                row[f"rps_vs_{other}"] = c["rps"] / b["rps"]
                if b["p99_us"]:
                    row[f"p99_vs_{other}"] = c["p99_us"] / b["p99_us"]
        out.append(row)
    return out


def checks(result: dict, args) -> dict:
    cells = [c for c in result["cells"] if c["server"] == PRNGD]
    by = {(c["transport"], c["scenario"], c["conns"], c["server"]): c for c in result["cells"]}
    ch: dict = {}
    ch["prngd_short_replies"] = sum(c["short"] for c in cells)
    ch["prngd_zero_replies"] = sum(c["zero"] for c in cells)
    ch["prngd_overlong_or_errors"] = sum(c["overlong"] + c["errors"] + c["connect_errors"] + c["stalled_at_end"]
                                         for c in cells)
    ch["no_short_replies"] = ch["prngd_short_replies"] == 0 and ch["prngd_zero_replies"] == 0
    h = by.get((*HEADLINE, PRNGD)), by.get((*HEADLINE, BASELINE))
    if h[0] and h[1]:
        ch["headline_ratio"] = h[0]["rps"] / h[1]["rps"]
        ch["headline_ratio_ok"] = ch["headline_ratio"] >= 0.8
        ch["headline_p99_ms"] = h[0]["p99_us"] / 1000
    p99_50 = {f'{c["transport"]}/{c["scenario"]}': c["p99_us"] / 1000 for c in cells if c["conns"] == 50}
    if p99_50:
        ch["p99_ms_at_50"] = p99_50
        ch["p99_at_50_over_5ms"] = sorted(k for k, v in p99_50.items() if v >= 5.0)
        ch["p99_at_50_over_2ms"] = sorted(k for k, v in p99_50.items() if v >= 2.0)
    # Issue 15's targets, against the C server measured in the same run.
    for name in ("block255", "openssh"):
        p, c = by.get(("unix", name, 50, PRNGD)), by.get(("unix", name, 50, CEILING))
        if p and c and c["rps"]:
            ch[f"unix_{name}_50_vs_c"] = p["rps"] / c["rps"]
    hp = by.get(("unix", "block255", 50, PRNGD))
    if hp and hp.get("server_cpu_s_per_1k") is not None:
        ch["cpu_us_per_reply_block255_50"] = hp["server_cpu_s_per_1k"] * 1000
    st = result["startup"].get(PRNGD)
    if st:
        ch["exec_to_first_byte_s"] = st["exec_to_first_byte_s"]
        ch["exec_to_first_byte_ok"] = st["exec_to_first_byte_s"] < 0.4
    sr = result.get("startup_ratio")
    if sr:  # issue 22: at most 1.2 x the raw trio baseline, median of alternated starts
        ch["exec_to_first_byte_vs_base"] = sr["vs_" + BASELINE]
        ch["exec_to_first_byte_vs_base_ok"] = sr["vs_" + BASELINE] <= 1.2
    # One client: one persistent connection (02 ff), and a new connection per request.
    one = {}
    for r in result.get("ratios", []):
        if r["conns"] == 1 and (r["scenario"] == "block255" or result["meta"]["modes"].get(r["scenario"]) == "newconn"
                                or r["scenario"] in result["meta"].get("like", {})):
            one[f'{r["transport"]}/{r["scenario"]}'] = {k: r.get(k) for k in ("rps_vs_" + BASELINE, "rps_vs_" + CEILING)}
    if one:
        ch["one_connection"] = one
        v = one.get("unix/block255", {}).get("rps_vs_" + BASELINE)
        if v is not None:  # issue 22: at least 1.0 x the raw trio baseline
            ch["unix_block255_1_vs_base"] = v
            ch["unix_block255_1_vs_base_ok"] = v >= 1.0
    mem = result["memory"].get(PRNGD, {})
    if mem.get("rss_idle_kb"):
        ch["rss_idle_mb"] = mem["rss_idle_kb"] / 1024
        ch["rss_idle_ok"] = ch["rss_idle_mb"] < 40 and mem.get("idle_conns_failed", 0) == 0
    # The load generator is not the bottleneck where it drove some server faster than prngd.
    not_bottleneck, bottleneck = 0, []
    for c in cells:
        key = (c["transport"], c["scenario"], c["conns"])
        best = max((by[(*key, o)]["rps"] for o in (BASELINE, BASELINE_STREAM, CEILING) if (*key, o) in by), default=0)
        if best > c["rps"]:
            not_bottleneck += 1
        else:
            bottleneck.append("/".join(map(str, key)))
    ch["cells_where_loadgen_drove_another_server_faster"] = not_bottleneck
    ch["max_other_cpu"] = max((c["max_other_cpu"] for c in result["cells"]), default=0.0)
    ch["disturbed_cells"] = sorted({f'{c["transport"]}/{c["scenario"]}/{c["conns"]}' for c in result["cells"]
                                    if c["other_cpu"] is not None and c["other_cpu"] > args.quiet_threshold})
    ch["cells_where_prngd_was_fastest"] = bottleneck
    return ch


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds, so the servers are stopped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    result = run(args)
    out = Path(args.out)
    (out / "benchmark.json").write_text(json.dumps(result, indent=1) + "\n")
    md = report.markdown(result)
    (out / "benchmark.md").write_text(md)
    png_note = "PNG skipped (--no-plot)" if args.no_plot else report.plot(result, out / "benchmark.png")
    print(md)
    print(f"[bench] wrote {out / 'benchmark.json'}, {out / 'benchmark.md'}; {png_note}; "
          f"{result['meta']['elapsed_s']} s", file=sys.stderr)
    ok = result["checks"].get("no_short_replies", False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
