"""Command line: `prngd [options] SOCKET...` as PRNGD takes it, plus the client tools.

`prngd get|add|status|ping|feed-kernel ...` are the client tools (prngd.client);
anything else starts (or with -k stops) the daemon.  A socket literally named
like a tool can be given as ./NAME.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sys
import time

from prngd import __version__, config

CLIENT_COMMANDS = ("get", "add", "status", "ping", "feed-kernel")

log = logging.getLogger("prngd")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in CLIENT_COMMANDS:
        from prngd import client

        return client.main(argv)
    return daemon_main(argv)


def _mode(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="prngd",
        description="Userland PRNG daemon speaking the EGD protocol. "
                    f"Client tools: prngd {{{','.join(CLIENT_COMMANDS)}}} --help.",
        epilog="SOCKET is a Unix socket path, tcp/localhost:PORT (PRNGD's spelling) or HOST:PORT. "
               f"Default: {config.default_socket()}.")
    p.add_argument("sockets", nargs="*", metavar="SOCKET")
    p.add_argument("-f", "--fg", action="store_true", help="stay in the foreground, log to stderr")
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages (implies nothing else)")
    p.add_argument("-c", "--cmdfile", "--config", metavar="FILE",
                   help="configuration: prngd INI or a PRNGD command file")
    p.add_argument("-s", "--seedfile", metavar="FILE", help=f"seed file (default {config.default_seedfile()})")
    p.add_argument("-n", "--no-seedfile", action="store_true", help="use no seed file")
    p.add_argument("-p", "--pidfile", metavar="FILE", help="write the daemon's pid here")
    p.add_argument("-m", "--mode", type=_mode, metavar="MODE", help="Unix socket mode, octal (default 0666)")
    p.add_argument("-k", "--kill", action="store_true", help="stop the daemon serving SOCKET, then exit")
    p.add_argument("-v", "--version", action="version", version=f"prngd {__version__}")
    return p


def _overrides(args: argparse.Namespace) -> dict:
    o: dict = {}
    if args.sockets:
        o["sockets"] = list(args.sockets)
    if args.no_seedfile:
        o["seedfile"] = ""
    elif args.seedfile:
        o["seedfile"] = os.path.abspath(args.seedfile)
    if args.pidfile:
        o["pidfile"] = os.path.abspath(args.pidfile)
    if args.mode is not None:
        o["socket_mode"] = args.mode
    if args.debug:
        o["log_level"] = "debug"
    if args.fg:
        o["foreground"] = True
    return o


def load_settings(args: argparse.Namespace) -> config.Settings:
    """The file's settings with the command line laid over them (also what SIGHUP re-runs)."""
    path = os.path.abspath(args.cmdfile) if args.cmdfile else None
    settings = config.load(path).replace(**_overrides(args))
    config.validate(settings)
    return settings


def setup_logging(settings: config.Settings, to_syslog: bool) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if to_syslog and os.path.exists("/dev/log"):
        handler: logging.Handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter("prngd[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s prngd[%(process)d] %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())


def kill_daemon(spec: str, timeout: float = 30.0) -> int:
    """PRNGD's -k: ask the daemon on SOCKET for its pid (0x04), then SIGTERM it and wait."""
    from prngd import client

    try:
        with client.EGDClient(spec, timeout=5.0) as c:
            pid = c.pid()
    except Exception as e:
        print(f"prngd: no daemon answers on {spec}: {e}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"prngd: daemon pid {pid} on {spec} is gone", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"prngd: not allowed to signal pid {pid}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            print(f"prngd: stopped pid {pid} on {spec}", file=sys.stderr)
            return 0
        time.sleep(0.05)
    print(f"prngd: pid {pid} did not stop within {timeout:g}s", file=sys.stderr)
    return 1


def _running(pid: int) -> bool:
    """True while `pid` exists and has not exited (a zombie waiting for its parent has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _detach() -> int | None:
    """Fork into the background as PRNGD does; the parent exits once the child serves.

    Returns the write end of a pipe in the child (write b"1" there when ready);
    in the parent it never returns.
    """
    r, w = os.pipe()
    if os.fork():
        os.close(w)
        ready = os.read(r, 1)
        os._exit(0 if ready == b"1" else 1)
    os.close(r)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    return w


def daemon_main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    for spec in args.sockets:
        # A bare word is more likely a mistyped tool name than a socket in the
        # current directory; ./NAME says the latter.
        if "/" not in spec and ":" not in spec:
            print(f"prngd: {spec!r} is neither a tool ({', '.join(CLIENT_COMMANDS)}) nor a socket; "
                  f"write ./{spec} for a socket here", file=sys.stderr)
            return 2
    try:
        settings = load_settings(args)
    except config.ConfigError as e:
        print(f"prngd: {e}", file=sys.stderr)
        return 2
    if args.kill:
        return max((kill_daemon(s) for s in settings.resolved_sockets()), default=1)

    ready_fd = None if settings.foreground else _detach()
    setup_logging(settings, to_syslog=False)

    wrote_pidfile = []

    def on_ready() -> None:
        if settings.pidfile:
            with open(settings.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
            wrote_pidfile.append(settings.pidfile)
        if ready_fd is not None:
            # Serving: tell the waiting parent, then leave the terminal.
            setup_logging(settings, to_syslog=True)
            os.write(ready_fd, b"1")
            os.close(ready_fd)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.close(devnull)

    import trio

    from prngd.server import Daemon, StartupError

    try:
        daemon = Daemon(settings, reload=lambda: load_settings(args), on_ready=on_ready)
        trio.run(daemon.run)
    except StartupError as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        for path in wrote_pidfile:  # never another daemon's
            try:
                os.unlink(path)
            except OSError:
                pass
    return 0
