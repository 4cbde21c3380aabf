"""The servers under test as fresh processes: start (timing exec to first byte), watch, stop."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from benchmarks.loadgen import ROOT, Target


# An installed daemon starts from compiled bytecode (pip and distribution
# packages compile it at install), so a start is timed as one, whatever
# PYTHONDONTWRITEBYTECODE says: compiling ~4000 lines of prngd at every exec was
# a fifth of its start.  The bytecode goes to the checkout's __pycache__
# directories (git-ignored), as Python's own default would put it.

def compile_bytecode() -> None:
    """Compile prngd and the baseline before any start is timed."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "prngd", "benchmarks"], cwd=ROOT, env=_env(),
                   stdout=subprocess.DEVNULL, check=True)


def raise_nofile(want: int = 8192) -> None:
    """Let this process, and the servers it starts, hold `want` descriptors (1000 idle connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _first_byte(path: str) -> bool:
    """One `02 01` on a new connection to `path`; True once a byte comes back."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"\x02\x01")
        return len(s.recv(1)) == 1
    except OSError:
        return False
    finally:
        s.close()


def _answers_tcp(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"\x02\x01")
            return len(s.recv(1)) == 1
    except OSError:
        return False


def _env() -> dict:
    """The environment the Python servers run in: the checkout on the path, bytecode used and kept (above)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class Server:
    """One server process with a Unix socket (and maybe a TCP one, and for prngd a `,pr` one)."""

    def __init__(self, name: str, argv: list[str], unix: str, tcp: str | None, log: Path, cwd: Path,
                 pr_unix: str | None = None):
        self.name, self.argv, self.unix, self.tcp, self.log_path, self.cwd = name, argv, unix, tcp, log, cwd
        self.pr_unix = pr_unix  # a Unix socket served with prediction resistance (spelled PATH,pr)
        self.proc: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None
        self.exec_to_first_byte_s: float | None = None

    def target(self, transport: str, socket: str = "plain") -> Target:
        if socket == "pr":
            return Target("unix", self.pr_unix)
        return Target("unix", self.unix) if transport == "unix" else Target("tcp", self.tcp)

    def start(self, timeout: float = 30.0) -> float:
        """Start the process; the seconds from exec to the first byte served over Unix."""
        log = open(self.log_path, "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=_env(), cwd=self.cwd)
        log.close()
        deadline = t0 + timeout
        while not _first_byte(self.unix):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before serving:\n{self.log()}")
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer on {self.unix} within {timeout} s:\n{self.log()}")
            time.sleep(0.001)
        self.exec_to_first_byte_s = time.perf_counter() - t0
        if self.tcp:
            while not _answers_tcp(self.tcp):
                if self.proc.poll() is not None or time.perf_counter() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name} does not answer on {self.tcp}:\n{self.log()}")
                time.sleep(0.005)
        self.ps = psutil.Process(self.proc.pid)
        return self.exec_to_first_byte_s

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss_kb(self) -> int:
        return self.ps.memory_info().rss // 1024

    def peak_rss_kb(self) -> int | None:
        """VmHWM: the largest resident set the process has had (Linux)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        return None if self.proc is None else stop(self.proc)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


def prngd_argv(unix: str, tcp: str | None, extra: list[str], pr_unix: str | None = None) -> list[str]:
    """The daemon under test with default settings and no seed file."""
    return [sys.executable, "-m", "prngd", "-f", "-n", *extra, unix, *([pr_unix + PR] if pr_unix else []),
            *([tcp] if tcp else [])]


PR = ",pr"  # the suffix that asks prngd for prediction resistance on a listening socket


def probe_pr(argv: list[str], path: str, log: Path, cwd: Path, timeout: float = 30.0) -> str | None:
    """Start `argv` (a daemon given the one socket `path,pr`) and see what it makes of the spelling.

    None when it serves `path`; otherwise one line saying why not: it exited (refused the
    spelling), or it bound the literal path `path,pr` (a daemon without the suffix). The
    process is stopped either way.
    """
    literal = path + PR
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=_env(), cwd=cwd)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if _first_byte(path):
                return None
            if os.path.exists(literal):
                return f"the daemon took {literal} for a socket path: it has no {PR} sockets"
            if proc.poll() is not None:
                lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
                last = lines[-1].strip() if lines else "no output"
                return f"the daemon refused {literal} (exit {proc.returncode}: {last})"
            if time.monotonic() > deadline:
                return f"the daemon did not answer on {path} within {timeout:g} s"
            time.sleep(0.005)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after `timeout` seconds; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def baseline_argv(mode: str, unix: str, tcp: str | None) -> list[str]:
    return [sys.executable, "-m", "benchmarks.baseline_server", "--mode", mode, unix, *([tcp] if tcp else [])]


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
