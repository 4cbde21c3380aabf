"""Driving load: builds loadgen.c (and cserver.c) at run time, or falls back to pyloadgen.py.

The C programs are compiled with `cc -O2` (or $CC) into benchmarks/build/
(git-ignored) when missing or older than their source.  Without a compiler
the pure-Python generator is used and the C ceiling server is skipped; the
JSON then says so ("generator": "python").
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / "build"


@dataclass(frozen=True)
class Target:
    """Where a server listens: a Unix socket path or 127.0.0.1:PORT."""

    transport: str  # "unix" or "tcp"
    address: str

    def args(self) -> list[str]:
        return ["--unix" if self.transport == "unix" else "--tcp", self.address]


def compile_c(name: str, extra: tuple[str, ...] = ()) -> tuple[Path | None, str]:
    """Build benchmarks/build/NAME from benchmarks/NAME.c; (path or None, note)."""
    src = HERE / f"{name}.c"
    out = BUILD / name
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out, "cached"
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None, "no C compiler found"
    BUILD.mkdir(parents=True, exist_ok=True)
    cmd = [cc, "-O2", "-pthread", "-o", str(out), str(src), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, f"{' '.join(cmd)} failed: {proc.stderr.strip()[:500]}"
    return out, "built with " + " ".join(cmd[:3])


class LoadGenerator:
    """Runs one load (a fresh process per measurement) and returns its JSON as a dict."""

    def __init__(self, force_python: bool = False):
        self.exe: Path | None = None
        self.note = "pure-Python fallback requested (--python-loadgen)"
        if not force_python:
            self.exe, self.note = compile_c("loadgen")
        self.kind = "c" if self.exe else "python"

    def _argv(self) -> list[str]:
        if self.exe:
            return [str(self.exe)]
        return [sys.executable, "-m", "benchmarks.pyloadgen"]

    def _env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def run(self, target: Target, request: str, conns: int, duration: float, mode: str) -> dict:
        argv = self._argv() + target.args() + [
            "--request", request, "--conns", str(conns), "--duration", str(duration), "--mode", mode]
        if target.transport == "tcp" and mode == "newconn":
            argv += ["--spread-src", "200"]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self._env(),
                              timeout=duration + 60, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({proc.returncode}): {proc.stderr.strip()}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    @contextlib.contextmanager
    def idle(self, target: Target, n: int):
        """Hold n idle connections (each has had one 00 answered) while the block runs."""
        proc = subprocess.Popen(self._argv() + target.args() + ["--idle", str(n)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self._env(), cwd=ROOT)
        try:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"idle connections failed: {proc.stderr.read().strip()}")
            yield json.loads(line)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
