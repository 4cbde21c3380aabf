"""Profile the daemon under load: where its connection loop spends the time.

    python3 -m benchmarks.profile_daemon [--tool auto|py-spy|cprofile] [--request 02ff]
                                         [--conns 50] [--duration 10] [--out DIR]

Starts a fresh daemon (`python3 -m prngd -f -n SOCKET`, default settings),
warms it up, drives `--conns` persistent connections sending `--request`
over Unix with the load generator, and samples it:

- py-spy (`pip install py-spy`; needs ptrace): `py-spy record --nonblocking
  --format raw` at 250 Hz.  Without --idle, py-spy keeps only the samples
  where a thread was running (on a CPU, in Python or in a system call), so the
  shares add up to the daemon's CPU time.  They are added up per source line
  (self time: the line being run) and per prngd/ line (inclusive time: the
  line of prngd's own code each sample is under).  --nonblocking keeps the
  overhead low but cuts some stacks short (they still count as self time).
- cProfile (no py-spy): the daemon runs under this module's `--wrap` mode
  (cProfile around `prngd.cli.main`), stopped with SIGTERM; the report is
  per function, and cProfile's own overhead inflates the call-heavy parts.

Writes DIR/profile-<tool>.txt (the raw samples or pstats) and prints the tables.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
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
    self_lines: collections.Counter = collections.Counter()
    self_funcs: collections.Counter = collections.Counter()
    prngd_incl: collections.Counter = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = _split_frames(stack)
        total += n
        func, file, lineno = frames[-1]
        self_lines[f"{file}:{lineno} {func}"] += n
        self_funcs[f"{file} {func}"] += n
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

    return {"samples": total, "expected_if_always_busy": expected,
            "self_lines": table(self_lines), "self_functions": table(self_funcs),
            "prngd_lines_inclusive": table(prngd_incl)}


def _print_tables(summary: dict) -> None:
    exp = summary.get("expected_if_always_busy")
    print(f"{summary['samples']} on-CPU samples" + (f" of {exp} (a thread always busy)" if exp else "")
          + "; shares below are of the on-CPU samples")
    for title, key in (("self time by line", "self_lines"), ("self time by function", "self_functions"),
                       ("inclusive time by prngd/ line", "prngd_lines_inclusive")):
        print(f"\n{title}:")
        for row in summary[key]:
            print(f"  {row['share'] * 100:5.1f}%  {row['samples']:6}  {_short(row['where'])}")


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


def _load_in_background(load: LoadGenerator, server: Server, request: str, conns: int, seconds: float):
    result: dict = {}

    def go():
        result.update(load.run(server.target("unix"), request, conns, seconds, "persistent"))

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--wrap":
        return wrap(argv[1:])
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.profile_daemon",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--tool", choices=("auto", "py-spy", "cprofile"), default="auto")
    p.add_argument("--request", default="02ff")
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--prngd-arg", action="append", default=[], metavar="ARG")
    a = p.parse_args(argv)
    raise_nofile()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tool = a.tool
    if tool == "auto":
        tool = "py-spy" if shutil.which("py-spy") else "cprofile"
    work = Path(tempfile.mkdtemp(prefix="prngd-prof-"))
    sock = str(work / "egd.sock")
    load = LoadGenerator()
    pstats_path = out / "profile-cprofile.pstats"
    cmd = prngd_argv(sock, None, a.prngd_arg)
    if tool == "cprofile":
        cmd = [sys.executable, "-m", "benchmarks.profile_daemon", "--wrap", str(pstats_path), "--", *cmd[3:]]
    server = Server("prngd", cmd, sock, None, out / "profile-daemon.log", work)
    server.start()
    try:
        load.run(server.target("unix"), a.request, a.conns, 1.0, "persistent")  # warm-up
        cpu0 = server.cpu_s()
        if tool == "py-spy":
            thread, result = _load_in_background(load, server, a.request, a.conns, a.duration + 1.0)
            time.sleep(0.5)
            raw_path = out / "profile-pyspy.txt"
            spy = subprocess.run(["py-spy", "record", "-p", str(server.pid), "-d", str(int(a.duration)),
                                  "-r", str(a.rate), "--nonblocking", "--format", "raw",
                                  "-o", str(raw_path)], capture_output=True, text=True)
            thread.join()
            if spy.returncode != 0:
                print(f"py-spy failed ({spy.returncode}): {spy.stderr.strip()}; try --tool cprofile", file=sys.stderr)
                return 1
        else:
            thread, result = _load_in_background(load, server, a.request, a.conns, a.duration)
            thread.join()
        cpu = server.cpu_s() - cpu0
    finally:
        server.stop()
        for f in work.iterdir():
            f.unlink(missing_ok=True)
        work.rmdir()
    print(f"load: {a.request} x {a.conns} Unix, {result.get('rps', 0):.0f} req/s while profiled "
          f"(profiler overhead included), p99 {result.get('p99_us', 0) / 1000:.2f} ms, daemon CPU {cpu:.1f} s")
    if tool == "py-spy":
        summary = summarize_pyspy(raw_path.read_text(), expected=int(a.rate * int(a.duration)))
        _print_tables(summary)
        print(f"\nraw samples: {raw_path}")
    else:
        import pstats

        st = pstats.Stats(str(pstats_path))
        st.sort_stats("tottime").print_stats(20)
        print(f"pstats: {pstats_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
