"""Profile the daemon under load: where its connection loop spends the time.

    python3 -m benchmarks.profile_daemon [--tool sampler|py-spy|cprofile] [--request 02ff]
                                         [--conns 50] [--mode persistent|newconn] [--duration 10]
                                         [--rate HZ] [--out DIR]

Starts a fresh daemon (`python3 -m prngd -f -n SOCKET`, default settings),
warms it up, drives `--conns` persistent connections sending `--request`
over Unix with the load generator, and samples it with one of:

- `sampler` (the default): the daemon runs under this module's
  `--wrap-sampler` mode, a SIGPROF timer that ticks with the process's CPU
  time (at most the kernel's timer rate, ~250 Hz) and records the main
  thread's Python stack; SIGUSR2 starts and stops it, so only the loaded
  period is sampled.  The handler runs between bytecodes, so a system call's
  time lands on its line.  No dependency, no ptrace, ~1 % overhead.
- `py-spy` (`pip install py-spy`; needs ptrace): `py-spy record --threads`,
  main thread only.  It pauses the daemon for each sample, and its samples
  then land mostly on lines doing system calls (send/recv/epoll_ctl take
  ~80 % where the sampler finds ~45 %); with `--nonblocking` it does not
  pause, but reports the line of a coroutine's last `await` instead of the
  line being run (Python 3.11).  Use it to cross-check, not for shares.
- `cprofile`: the daemon under cProfile (per function; its overhead inflates
  the call-heavy parts).

The samples are added up per package, per source line (self time: the line
being run, system calls included) and per prngd/ line (inclusive: the line of
prngd's own code each sample is under).  Writes DIR/profile-<tool>.txt (the
stacks, in py-spy's raw format, for flamegraph.pl) and prints the tables.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.loadgen import HERE, ROOT, LoadGenerator
from benchmarks.servers import Server, prngd_argv, raise_nofile

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _split_frames(stack: str) -> list[tuple[str, str, str]]:
    out = []
    for part in stack.split(";"):
        m = FRAME.match(part.strip())
        out.append((m["func"], m["file"], m["line"] or "?") if m else (part.strip(), "?", "?"))
    return out


def summarize_pyspy(raw: str, top: int = 15, expected: int | None = None) -> dict:
    """Per-line self and inclusive sample counts from py-spy's raw (collapsed) output.

    `expected`: samples a thread always on CPU would give (rate x seconds).
    """
    threads: collections.Counter = collections.Counter()
    self_lines: collections.Counter = collections.Counter()
    self_funcs: collections.Counter = collections.Counter()
    self_pkgs: collections.Counter = collections.Counter()
    prngd_incl: collections.Counter = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        if stack.startswith("thread ("):
            # --threads: "thread (TID): NAME;frame;frame..."; only the event loop's thread counts here.
            head, _, stack = stack.partition(";")
            name = head.partition("): ")[2]
            threads[name] += n
            if name != "MainThread":
                continue
        frames = _split_frames(stack)
        total += n
        func, file, lineno = frames[-1]
        self_lines[f"{file}:{lineno} {func}"] += n
        self_funcs[f"{file} {func}"] += n
        self_pkgs[_package(file)] += n
        seen = set()
        for f, fl, ln in frames:
            if "prngd/" in fl and not fl.startswith("<"):
                key = f"{fl}:{ln} {f}"
                if key not in seen:
                    seen.add(key)
                    prngd_incl[key] += n
    def table(counter):
        return [{"where": k, "samples": v, "share": v / total if total else 0.0}
                for k, v in counter.most_common(top)]

    return {"samples": total, "expected_if_always_busy": expected, "threads": dict(threads),
            "self_packages": table(self_pkgs), "self_lines": table(self_lines), "self_functions": table(self_funcs),
            "prngd_lines_inclusive": table(prngd_incl)}


def _print_tables(summary: dict) -> None:
    exp = summary.get("expected_if_always_busy")
    others = {k: v for k, v in summary.get("threads", {}).items() if k != "MainThread"}
    print(f"{summary['samples']} on-CPU samples of the main thread" + (f" of {exp} (always busy)" if exp else "")
          + "; shares below are of these" + (f"; other threads (not counted): {others}" if others else ""))
    for title, key in (("self time by package", "self_packages"), ("self time by line", "self_lines"),
                       ("self time by function", "self_functions"),
                       ("inclusive time by prngd/ line", "prngd_lines_inclusive")):
        print(f"\n{title}:")
        for row in summary[key]:
            print(f"  {row['share'] * 100:5.1f}%  {row['samples']:6}  {_short(row['where'])}")


def _package(file: str) -> str:
    """Who owns a source file: prngd, trio, outcome/attrs (trio's helpers), Crypto, or the stdlib."""
    f = _short(file)
    if f.startswith("<attrs generated") or f.startswith("outcome/") or f.startswith("attr/"):
        return "outcome + attrs (trio's task results)"
    top = f.split("/", 1)[0] if "/" in f else f
    if top in ("prngd", "trio", "Crypto", "benchmarks"):
        return top
    return "stdlib and other"


def _short(where: str) -> str:
    for prefix in (str(ROOT) + "/", sys.prefix + "/lib/python3.11/site-packages/", sys.prefix + "/lib/python3.11/"):
        where = where.replace(prefix, "")
    where = re.sub(r"^.*/site-packages/", "", where)
    return where


def wrap(argv: list[str]) -> int:
    """--wrap OUT.pstats -- PRNGD_ARGS: run the daemon's main() under cProfile."""
    import cProfile

    out, args = argv[0], argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    from prngd.cli import main as prngd_main

    prof = cProfile.Profile()
    prof.enable()
    try:
        rc = prngd_main(args)
    finally:
        prof.disable()
        prof.dump_stats(out)
    return rc or 0


def wrap_sampler(argv: list[str]) -> int:
    """--wrap-sampler OUT.txt [HZ] -- PRNGD_ARGS: the daemon's main() with a SIGPROF stack sampler.

    SIGUSR2 starts sampling, a second SIGUSR2 stops it and writes OUT.txt in
    py-spy's raw format.  The ITIMER_PROF timer ticks with the process's CPU
    time; Python runs the handler in the main thread between bytecodes, so a
    sample lands on the line being run (a system call's line once it returns).
    """
    import signal

    out, rest = argv[0], argv[1:]
    hz = 1000.0
    if rest and rest[0] != "--":
        hz, rest = float(rest[0]), rest[1:]
    args = rest[1:] if rest and rest[0] == "--" else rest
    counts: collections.Counter = collections.Counter()
    state = {"on": False}

    def on_prof(signum, frame):
        parts = []
        while frame is not None:
            code = frame.f_code
            parts.append(f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})")
            frame = frame.f_back
        parts.append("thread (0): MainThread")
        counts[";".join(reversed(parts))] += 1

    def on_usr2(signum, frame):
        if not state["on"]:
            state["on"] = True
            signal.setitimer(signal.ITIMER_PROF, 1 / hz, 1 / hz)
            return
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        state["on"] = False
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            for stack, n in counts.items():
                f.write(f"{stack} {n}\n")
        os.replace(tmp, out)

    signal.signal(signal.SIGPROF, on_prof)
    signal.signal(signal.SIGUSR2, on_usr2)
    from prngd.cli import main as prngd_main

    return prngd_main(args) or 0


def _load_in_background(load: LoadGenerator, server: Server, request: str, conns: int, seconds: float,
                        mode: str = "persistent"):
    result: dict = {}

    def go():
        result.update(load.run(server.target("unix"), request, conns, seconds, mode))

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--wrap":
        return wrap(argv[1:])
    if argv and argv[0] == "--wrap-sampler":
        return wrap_sampler(argv[1:])
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.profile_daemon",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--tool", choices=("sampler", "py-spy", "cprofile"), default="sampler")
    p.add_argument("--request", default="02ff")
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--mode", choices=("persistent", "newconn"), default="persistent",
                   help="persistent connections, or a new connection per request (OpenSSH, OpenSSL)")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=1000,
                   help="samples per second (py-spy: of wall time; sampler: of CPU time, capped by the kernel tick)")
    p.add_argument("--nonblocking", action="store_true",
                   help="do not let py-spy pause the daemon for samples (less overhead, wrong lines in coroutines)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--prngd-arg", action="append", default=[], metavar="ARG")
    a = p.parse_args(argv)
    raise_nofile()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tool = a.tool
    if tool == "py-spy" and not shutil.which("py-spy"):
        p.error("py-spy is not installed (pip install py-spy); the default --tool sampler needs nothing")
    work = Path(tempfile.mkdtemp(prefix="prngd-prof-"))
    sock = str(work / "egd.sock")
    load = LoadGenerator()
    pstats_path = out / "profile-cprofile.pstats"
    cmd = prngd_argv(sock, None, a.prngd_arg)
    sampler_path = out / "profile-sampler.txt"
    if tool == "cprofile":
        cmd = [sys.executable, "-m", "benchmarks.profile_daemon", "--wrap", str(pstats_path), "--", *cmd[3:]]
    elif tool == "sampler":
        sampler_path.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "benchmarks.profile_daemon", "--wrap-sampler", str(sampler_path),
               str(a.rate), "--", *cmd[3:]]
    server = Server("prngd", cmd, sock, None, out / "profile-daemon.log", work)
    server.start()
    try:
        load.run(server.target("unix"), a.request, a.conns, 1.0, a.mode)  # warm-up
        cpu0 = server.cpu_s()
        if tool == "py-spy":
            thread, result = _load_in_background(load, server, a.request, a.conns, a.duration + 1.0, a.mode)
            time.sleep(0.5)
            raw_path = out / "profile-pyspy.txt"
            spy = subprocess.run(["py-spy", "record", "-p", str(server.pid), "-d", str(int(a.duration)),
                                  "-r", str(a.rate), "--threads", *(["--nonblocking"] if a.nonblocking else []),
                                  "--format", "raw", "-o", str(raw_path)], capture_output=True, text=True)
            thread.join()
            if spy.returncode != 0:
                print(f"py-spy failed ({spy.returncode}): {spy.stderr.strip()}; the default --tool sampler needs no ptrace",
                      file=sys.stderr)
                return 1
        elif tool == "sampler":
            thread, result = _load_in_background(load, server, a.request, a.conns, a.duration + 1.0, a.mode)
            time.sleep(0.5)
            os.kill(server.pid, signal.SIGUSR2)
            time.sleep(a.duration)
            os.kill(server.pid, signal.SIGUSR2)
            thread.join()
            deadline = time.monotonic() + 10
            while not sampler_path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            thread, result = _load_in_background(load, server, a.request, a.conns, a.duration, a.mode)
            thread.join()
        cpu = server.cpu_s() - cpu0
    finally:
        server.stop()
        for f in work.iterdir():
            f.unlink(missing_ok=True)
        work.rmdir()
    print(f"load: {a.request} x {a.conns} Unix {a.mode}, {result.get('rps', 0):.0f} req/s while profiled "
          f"(profiler overhead included), p99 {result.get('p99_us', 0) / 1000:.2f} ms, daemon CPU {cpu:.1f} s")
    if tool in ("py-spy", "sampler"):
        path = raw_path if tool == "py-spy" else sampler_path
        # The sampler ticks with CPU time, and no faster than the kernel's timer.
        summary = summarize_pyspy(path.read_text(), expected=int(a.rate * a.duration) if tool == "py-spy" else None)
        _print_tables(summary)
        print(f"\nraw samples: {path}")
    else:
        import pstats

        st = pstats.Stats(str(pstats_path))
        st.sort_stats("tottime").print_stats(20)
        print(f"pstats: {pstats_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
