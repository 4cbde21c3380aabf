"""Command line: `prngd [options] SOCKET...` as PRNGD takes it, plus the client tools.

`prngd get|add|status|ping|reseed|feed-kernel|doctor ...` are the client tools;
anything else starts (or with -k stops) the daemon.  A socket literally named
like a tool can be given as ./NAME.
"""

from __future__ import annotations

import argparse
import base64
import gc
import logging
import math
import os
import stat
import sys
import time
from typing import Callable

# What only the tools, -k, -u or syslog use (prngd.client, prngd.kill, grp,
# logging.handlers) is imported where used: the daemon's start does not wait for it.
from prngd import __version__, config, cryptobackend, egd, ownfile, privileges, startsignals

CLIENT_COMMANDS = ("get", "add", "status", "ping", "reseed", "feed-kernel", "doctor")
MAX_FEED = 512  # prngd.feedkernel.MAX_FEED (not imported here: the tools start faster without it)

log = logging.getLogger("prngd")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in CLIENT_COMMANDS:
        startsignals.restore()  # Ctrl-C stops a tool at once
        gc.enable()  # off while the command started (prngd/__main__.py)
        stop = startsignals.stop_requested()
        if stop:  # while it was starting
            return 128 + stop
        return tools_main(argv)
    return daemon_main(argv)


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"-m must be an octal mode from 0000 to 0777, got {text!r}")
    return mode


def example_config_path() -> str | None:
    """prngd.conf.example: the source tree's (a checkout, an editable install), else pip's data_files copy."""
    import site
    import sysconfig
    from pathlib import Path

    name = "prngd.conf.example"
    candidates = [Path(__file__).resolve().parent.parent / name]
    for base in (sys.prefix, sysconfig.get_path("data"), site.USER_BASE):
        if base:
            candidates.append(Path(base) / "share" / "doc" / "prngd" / name)
    return next((str(c) for c in candidates if c.is_file()), None)


class _PrintExampleConfig(argparse.Action):
    """--example-config: print the annotated configuration, as --version prints the version."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        path = example_config_path()
        if path is None:
            parser.exit(1, "prngd: prngd.conf.example is not installed with this copy of prngd\n")
        with open(path) as f:
            sys.stdout.write(f.read())
        parser.exit(0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="prngd",
        description="Userland PRNG daemon speaking the EGD protocol. "
                    f"Client tools: prngd {{{','.join(CLIENT_COMMANDS)}}} --help.",
        epilog="SOCKET is a Unix socket path, tcp/localhost:PORT (PRNGD's spelling), HOST:PORT or vsock:PORT; "
               "SOCKET,pr reseeds from the kernel before every read there. "
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
    p.add_argument("-u", "--user", metavar="USER",
                   help="switch to USER (name or uid) once the sockets are bound; needs root")
    p.add_argument("--log-file", metavar="FILE",
                   help="log here (also with -f); default: stderr with -f, else syslog, else "
                        f"{config.default_log_file()}")
    p.add_argument("-v", "--version", action="version", version=f"prngd {__version__}")
    p.add_argument("--example-config", action=_PrintExampleConfig,
                   help="print the annotated example configuration (every key, its default) and exit")
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
    if args.user:
        o["user"] = args.user
    if args.log_file:
        o["log_file"] = args.log_file
    return o


def load_settings(args: argparse.Namespace, base_dir: str | None = None) -> config.Settings:
    """The file's settings with the command line laid over them (also what SIGHUP re-runs).

    Relative paths, in the file or on the command line, are taken from
    `base_dir`, the directory prngd was started in (a detached daemon runs in /).
    """
    base_dir = base_dir or os.getcwd()
    path = os.path.join(base_dir, args.cmdfile) if args.cmdfile else None
    settings = config.load(path).replace(**_overrides(args))
    settings = config.resolve_paths(settings, base_dir)
    config.validate(settings)
    return settings


SYSLOG_SOCKET = "/dev/log"
LOG_FORMAT = "%(asctime)s prngd[%(process)d] %(levelname)s: %(message)s"


def log_destination(settings: config.Settings) -> str:
    """Where every log line goes: "stderr", "syslog" or a file's absolute path.

    One place for all of them, the start line included: the log file when one
    is named; else stderr in the foreground; else syslog when its socket
    exists; else (a minimal container) the default log file, never nowhere.
    """
    if settings.log_file:
        return settings.log_file
    if settings.foreground:
        return "stderr"
    if os.path.exists(SYSLOG_SOCKET):
        return "syslog"
    return config.default_log_file()


def open_log_file(path: str, user_uid: int | None = None) -> logging.Handler:
    """A handler appending to `path`; the default log file's directory is created, no other.

    An existing file is written into only if prngd can show it is a log of its
    own (ownfile.log_refusal): a link, a device, a FIFO, someone else's or a
    binary file is refused in one line before anything is written.
    """
    if path == config.default_log_file():
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if path == os.devnull:  # the operator's way of saying "no log"
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        return logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace"))
    try:
        st = ownfile.lstat(path)
        # Refused by kind before it is opened: opening a device or a FIFO may itself do something.
        why = ownfile.refusal(st, "a log file") if st else None
        if not why:
            # O_RDWR: log_refusal reads its tail.
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | ownfile.SAFE_OPEN, 0o640)
            try:
                why = ownfile.log_refusal(fd, user_uid)  # what was opened, whatever the lstat saw
            except BaseException:
                os.close(fd)
                raise
            if why:
                os.close(fd)
    except OSError as e:
        raise config.ConfigError(f"cannot open log file {path}: {e.strerror}") from None
    if why:
        raise config.ConfigError("log file " + ownfile.refused(path, why, "writing into"))
    os.set_blocking(fd, True)
    return logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace"))


def setup_logging(settings: config.Settings, destination: str, file_handler: logging.Handler | None = None,
                  terminal: bool = False) -> None:
    """Send the log to `destination`; with `terminal`, warnings and errors to stderr as well (until detached)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if destination == "syslog":
        from logging.handlers import SysLogHandler

        handler: logging.Handler = SysLogHandler(address=SYSLOG_SOCKET, facility=SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter("prngd[%(process)d]: %(message)s"))
    elif destination == "stderr":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    else:
        handler = file_handler or open_log_file(destination)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    if terminal:
        # The operator waiting at the terminal sees why a start failed.
        echo = logging.StreamHandler(sys.stderr)
        echo.setLevel(logging.WARNING)
        echo.setFormatter(logging.Formatter("prngd: %(message)s"))
        echo.set_name("terminal")
        root.addHandler(echo)
    root.setLevel(settings.log_level.upper())


def _leave_terminal() -> None:
    """Detached and serving: stop echoing to the terminal, and point 0-2 at /dev/null."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "terminal":
            root.removeHandler(h)
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _close_inherited(keep: set[int]) -> None:
    """Close every descriptor above 2 but `keep`: `prngd SOCK 7>&1 | cat` must not hang on fd 7."""
    try:
        fds = sorted(int(name) for name in os.listdir("/proc/self/fd"))
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _detach(destination: str) -> int:
    """Fork into the background as PRNGD does; the parent exits once the child serves.

    Returns the write end of a pipe in the child (write the pid there when
    ready); the parent then says where the log goes and exits 0, or exits 1 if
    the child ended without serving (its error was shown on the terminal).
    """
    r, w = os.pipe()
    if os.fork():
        os.close(w)
        ready = b""
        while chunk := os.read(r, 64):
            ready += chunk
        if not ready.endswith(b"\n"):
            os._exit(1)
        where = "syslog" if destination == "syslog" else destination
        print(f"prngd: serving in the background, pid {int(ready)}; logging to {where}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(0)
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
        start_dir = os.getcwd()
    except OSError as e:
        print(f"prngd: cannot tell the current directory: {e.strerror}", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args, start_dir)
    except config.ConfigError as e:
        print(f"prngd: {e}", file=sys.stderr)
        return 2
    if args.kill:
        from prngd import kill

        return kill.kill_daemons(settings.resolved_sockets(), settings.pidfile)

    pinned = None
    user_uid = None  # -u's: the log file may be that user's
    if settings.user:
        try:
            user = privileges.lookup(settings.user)
            privileges.check_can_drop(user)
            user_uid = user.uid
        except privileges.PrivilegeError as e:
            print(f"prngd: {e}", file=sys.stderr)
            return 2
        if args.cmdfile:
            # SIGHUP re-reads the file as the user: a file only root can read would fail the first reload.
            path = os.path.join(start_dir, args.cmdfile)
            why = privileges.unreadable_as(user, path)
            if why:
                import grp  # this message's only: see the imports above

                try:
                    group = grp.getgrgid(user.gid).gr_name
                except KeyError:
                    group = str(user.gid)
                print(f"prngd: configuration {path} is not readable by {user.name} ({why}), who re-reads it at "
                      f"SIGHUP: give {user.name} read access (e.g. chgrp {group} {path} && chmod g+r {path}, and "
                      "the directories on the way)", file=sys.stderr)
                return 2
            config.import_parsers()  # and may take the other format then, with the Python installation out of reach
        # Defaults that depend on the euid are resolved once, as root, and kept after the drop.
        pinned = settings = config.pin_defaults(settings)

    def reload() -> config.Settings:
        new = load_settings(args, start_dir)
        return config.pin_defaults(new, pinned) if pinned is not None else new

    if startsignals.stop_requested():
        return 0  # SIGINT or SIGTERM while starting, and nothing touched yet: stop quietly
    destination = log_destination(settings)
    try:
        # Opened before detaching, so a log file that cannot be written is
        # said on the terminal, and the daemon never logs to nowhere.
        file_handler = None if destination in ("stderr", "syslog") else open_log_file(destination, user_uid)
    except config.ConfigError as e:
        print(f"prngd: {e}", file=sys.stderr)
        return 1
    ready_fd = None
    if not settings.foreground:
        ready_fd = _detach(destination)
        keep = {ready_fd}
        if file_handler is not None:
            keep.add(file_handler.stream.fileno())
        # systemd's LISTEN_FDS name the pid it started, never the detached child: none to keep.
        _close_inherited(keep)
    setup_logging(settings, destination, file_handler, terminal=ready_fd is not None)

    def on_ready() -> None:
        if ready_fd is not None:
            # Serving: tell the waiting parent, then leave the terminal.
            os.write(ready_fd, f"{os.getpid()}\n".encode())
            os.close(ready_fd)
            _leave_terminal()

    import trio

    cryptobackend.use_ctypes()  # before the server's modules import pycryptodome
    from prngd.server import Daemon, StartupError

    try:
        daemon = Daemon(settings, reload=reload, on_ready=on_ready)
        trio.run(daemon.run)
    except StartupError as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


# ---------------------------------------------------------------- client tools
# `prngd get|add|status|ping|feed-kernel`: thin shells over prngd.client.

def _whole(name: str, unit: str, lo: int, hi: int | None = None):
    """An argparse type: a whole number from `lo` (to `hi`); refused, never clamped, and said with its name."""
    allowed = f"from {lo} to {hi}" if hi is not None else f"{lo} or more"

    def convert(text: str) -> int:
        try:
            n = int(text, 0)
        except ValueError:
            n = None
        if n is None or n < lo or (hi is not None and n > hi):
            raise argparse.ArgumentTypeError(f"{name} must be a whole number of {unit} {allowed}, got {text!r}")
        return n
    return convert


def _uid(text: str) -> int:
    """An argparse type: a uid (any number: a container's may have no name here), or a user name."""
    import pwd

    if text.isdigit() and int(text) < 2**32 - 1:
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"--trust-uid: no user {text!r} in the password database") from None


def _seconds(name: str):
    def convert(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = float("nan")
        if not (math.isfinite(v) and 0 < v <= 1e7):
            raise argparse.ArgumentTypeError(f"{name} must be a number of seconds above 0, got {text!r}")
        return v
    return convert


def tools_parser() -> argparse.ArgumentParser:
    default = config.default_socket()
    p = argparse.ArgumentParser(prog="prngd", description="Tools that talk to a running prngd (or any EGD server).")
    p.add_argument("--version", action="version", version=f"prngd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def socket_arg(sp):
        sp.add_argument("socket", nargs="?", default=default, metavar="SOCKET",
                        help=f"EGD socket: a path or HOST:PORT (default {default})")
        sp.add_argument("--timeout", type=_seconds("--timeout"), default=10.0,
                        help="seconds to wait for an answer (default 10)")

    sp = sub.add_parser("get", help="print N random bytes (raw by default)")
    sp.add_argument("n", type=_whole("N", "bytes", 0), metavar="N",
                    help="how many bytes (any number: streamed, 255 a request)")
    fmt = sp.add_mutually_exclusive_group()
    fmt.add_argument("--hex", action="store_const", dest="format", const="hex", help="print hex and a newline")
    fmt.add_argument("--base64", action="store_const", dest="format", const="base64",
                     help="print base64 and a newline")
    socket_arg(sp)

    sp = sub.add_parser("add", help="send a file's bytes to the pool (0x03)")
    sp.add_argument("file", metavar="FILE", help="file to send; - for stdin")
    sp.add_argument("--bits", type=_whole("--bits", "bits", 0), default=0,
                    help="entropy the data is claimed to carry, in bits (default 0; at most 8 a byte; "
                         "prngd credits it only from trusted users)")
    sp.add_argument("--bytes", type=_whole("--bytes", "bytes", 1), default=None, dest="nbytes", metavar="N",
                    help="stop after N bytes (default: the whole file; a device or pipe until its end or Ctrl-C)")
    socket_arg(sp)

    sp = sub.add_parser("status", help="the daemon's status, from its admin socket",
                        description="The daemon's status and its last hour (entropy, requests/s, connections): "
                                    "sparklines on a terminal, plain numbers otherwise.")
    sp.add_argument("--json", action="store_true", help="print the status as JSON")
    sp.add_argument("--admin", metavar="PATH", help="admin socket (default: SOCKET + '.admin')")
    socket_arg(sp)

    sp = sub.add_parser("ping", help="ask the daemon's pid (0x04); exit 1 if it does not answer")
    socket_arg(sp)

    sp = sub.add_parser("reseed", help="make the daemon reseed now from the kernel (after a VM restore)",
                        description="Ask the daemon, over its admin socket, to reseed its pool at once from the "
                                    "kernel and rewrite its seed file, as it does when it detects a restore: for "
                                    "snapshot tools and host agents to call after restoring a VM. Root or the "
                                    "daemon's user only.")
    sp.add_argument("--admin", metavar="PATH", help="admin socket (default: SOCKET + '.admin')")
    socket_arg(sp)

    sp = sub.add_parser("feed-kernel", help="keep the kernel's pool topped up from an EGD server")
    socket_arg(sp)
    sp.add_argument("--once", action="store_true", help="feed once, say what was done, and exit")
    sp.add_argument("--interval", type=_seconds("--interval"), default=60.0,
                    help="feed at least this often, whatever entropy_avail says (default 60 s)")
    sp.add_argument("--poll", type=_seconds("--poll"), default=2.0,
                    help="how often to read entropy_avail (default 2 s)")
    sp.add_argument("--bytes", type=_whole("--bytes", "bytes", 1, MAX_FEED), default=64, dest="nbytes",
                    help=f"bytes per regular feed, 1 to {MAX_FEED} (default 64)")
    sp.add_argument("--no-credit", action="store_true",
                    help="write to the urandom device without crediting, even when allowed to credit")
    sp.add_argument("--trust-uid", type=_uid, action="append", default=[], metavar="USER",
                    help="credit a server listening as USER (a name or a uid; repeatable) as well as root's; "
                         "any other server's bytes, and a TCP server's, are mixed in with 0 bits")
    sp.add_argument("--admin", metavar="PATH",
                    help="the daemon's admin socket, read for restores (default: SOCKET + '.admin')")
    sp.add_argument("--entropy-avail", default=None, metavar="PATH", help=argparse.SUPPRESS)
    sp.add_argument("--threshold-file", default=None, metavar="PATH", help=argparse.SUPPRESS)
    sp.add_argument("--urandom", default=None, metavar="PATH", help=argparse.SUPPRESS)

    sp = sub.add_parser("doctor", help="say whether this machine needs prngd, and what to fix",
                        description="Check the kernel's generator, hardware RNG and VM detectors, the EGD sockets "
                                    "and who serves them, the seed file, the programs set up to read EGD and the "
                                    "service's sandbox; one line each, then a verdict.  Always exits 0.")
    sp.add_argument("sockets", nargs="*", metavar="SOCKET",
                    help="EGD sockets to check besides the usual paths and the configured ones")
    sp.add_argument("-c", "--config", metavar="FILE", help="read the sockets and seed file from this configuration")
    sp.add_argument("-s", "--seedfile", metavar="FILE", help="the seed file to check (default: the configured one)")
    sp.add_argument("--json", action="store_true", help="print the same as a JSON object")
    sp.add_argument("--timeout", type=_seconds("--timeout"), default=5.0,
                    help="seconds each check may take (default 5)")
    sp.add_argument("--postfix-config", default=None, metavar="DIR", help=argparse.SUPPRESS)
    return p


def tools_main(argv: list[str]) -> int:
    """`prngd get|add|status|ping|feed-kernel ...`; returns the exit status."""
    from prngd import client  # the tools' only: see the imports above

    parser = tools_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if argv and argv[0] in commands:
        # Options may come after SOCKET, as in `prngd get 16 --hex /run/egd-pool`:
        # plain parse_args would give SOCKET's slot away at the first positional.
        args = commands[argv[0]].parse_intermixed_args(argv[1:], argparse.Namespace(command=argv[0]))
    else:
        args = parser.parse_args(argv)  # --help, --version, or a usage error
    try:
        return _COMMANDS[args.command](args)
    except client.EGDError as e:
        print(f"prngd {args.command}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `prngd get 4096 | head -c 16`: the reader left; no traceback, and none at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


def _cmd_get(args) -> int:
    """Stream N bytes as they arrive: bounded memory for any N, and `| head -c 16` ends it at once."""
    from prngd import client  # the tools' only: see the imports above

    out = sys.stdout.buffer
    carry = b""  # base64 is encoded in multiples of 3 bytes so the chunks join into one text
    with client.EGDClient(args.socket, args.timeout) as c:
        for chunk in c.iter_read(args.n):
            if args.format == "hex":
                out.write(chunk.hex().encode("ascii"))
            elif args.format == "base64":
                data = carry + chunk
                cut = len(data) - len(data) % 3
                out.write(base64.b64encode(data[:cut]))
                carry = data[cut:]
            else:
                out.write(chunk)
            out.flush()
    if args.format == "base64":
        out.write(base64.b64encode(carry))
    if args.format:
        out.write(b"\n")
    out.flush()
    return 0


def _cmd_add(args) -> int:
    """Stream a file, pipe or device in 255-byte writes: bounded memory, `--bytes N` or EOF or Ctrl-C ends it."""
    from prngd import client  # the tools' only: see the imports above

    try:
        fd = sys.stdin.fileno() if args.file == "-" else os.open(args.file, os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(fd)
    except (OSError, ValueError) as e:
        print(f"prngd add: cannot read {args.file}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 1
    # The claim is spread over the length when it is known: --bytes, else a regular
    # file's size (0 for /proc files: unknown); a pipe's or device's goes with its first bytes.
    size = st.st_size if stat.S_ISREG(st.st_mode) and st.st_size > 0 else None
    total = args.nbytes if args.nbytes is not None else size
    if total is not None and size is not None:
        total = min(total, size)
    if total is not None and args.bits > 8 * total:
        print(f"prngd add: --bits {args.bits} is more than 8 bits a byte of the {total} bytes sent "
              f"(at most {8 * total})", file=sys.stderr)
        return 2
    if args.nbytes is None and args.file != "-" and stat.S_ISCHR(st.st_mode):
        print(f"prngd add: {args.file} is a device: sending until Ctrl-C (--bytes N stops after N bytes)",
              file=sys.stderr)
    sent = client.Sent()
    try:
        with client.EGDClient(args.socket, args.timeout) as c:
            c.write_stream(client.read_pieces(fd, args.nbytes), args.bits, total, sent)
            # 0x03 has no reply: a round trip afterwards shows the server took the writes.
            c.pid()
    except KeyboardInterrupt:
        print(f"prngd add: interrupted: sent {sent.bytes} bytes claiming {sent.bits} bits", file=sys.stderr)
        return 130
    except OSError as e:  # reading the input: socket errors arrive as EGDErrors
        print(f"prngd add: cannot read {args.file} after {sent.bytes} bytes: {e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        if args.file != "-":
            os.close(fd)
    note = _credit_note(c.address, sent.bits)
    if sent.bits < args.bits:
        note += f"; only {sent.bytes} bytes came, so {sent.bits} of the {args.bits} bits asked for were claimed"
    print(f"sent {sent.bytes} bytes claiming {sent.bits} bits to {c.address}; {note}")
    return 0


def _credit_note(address: egd.Address, bits: int) -> str:
    """What the daemon will do with the claim: its rules (root, trusted_uids, trust_tcp) are known."""
    if bits == 0:
        return "mixed in, nothing claimed"
    if not address.is_unix:
        return "credited only if the daemon sets trust_tcp = yes (TCP peers cannot be identified); else mixed in"
    uid = os.getuid()
    if uid == 0:
        return "credited (root is always trusted)"
    return (f"credited only if uid {uid} is in the daemon's trusted_uids; "
            "otherwise mixed in without credit")


def _cmd_ping(args) -> int:
    from prngd import client  # the tools' only: see the imports above

    start = time.perf_counter()
    with client.EGDClient(args.socket, args.timeout) as c:
        pid = c.pid()
    ms = (time.perf_counter() - start) * 1000
    print(f"{c.address}: pid {pid}, {ms:.2f} ms")
    return 0


def _ask_admin(args, doing: str, ask: Callable[[str, float], object]) -> tuple[object, int | None]:
    """(`ask(path, timeout)`'s answer, None) from the admin socket `prngd status|reseed` talks to, or
    (None, exit status) after one line saying why not."""
    from prngd import admin, client

    tool, what = f"prngd {args.command}", {"status": "the status comes", "reseed": "a reseed is asked"}[args.command]
    try:
        address = egd.parse_address(args.socket)
    except ValueError as e:
        print(f"{tool}: {e}", file=sys.stderr)
        return None, 2
    path = args.admin or config.admin_socket_for(args.socket)
    if not args.admin and not os.path.exists(path):
        # Served on the admin socket only; say which one is missing and why.
        if not address.is_unix:
            print(f"{tool}: {what} from the daemon's admin socket (a Unix socket), not from "
                  f"{args.socket}; give --admin PATH or the daemon's Unix EGD socket", file=sys.stderr)
            return None, 1
        if os.path.exists(address.path):
            print(f"{tool}: {address.path} exists but its admin socket {path} does not: the daemon runs "
                  f"with admin_socket = none or elsewhere; {args.command} needs it (--admin PATH)", file=sys.stderr)
            return None, 1
    try:
        return ask(path, args.timeout), None
    except (OSError, admin.AdminError) as e:
        print(f"{tool}: {client.error_for(e, egd.Address(path=path), doing)}", file=sys.stderr)
        return None, 1


def _cmd_reseed(args) -> int:
    from prngd import admin

    said, failed = _ask_admin(args, "asking for a reseed", admin.reseed)
    if failed is not None:
        return failed
    print(f"prngd reseed: {said}")
    return 0


def _cmd_status(args) -> int:
    from prngd import admin

    def ask(path: str, timeout: float) -> tuple[dict, dict | None]:
        status = admin.get_status(path, timeout)
        if args.json:
            return status, None
        try:
            return status, admin.get_history(path, timeout)
        except (OSError, admin.AdminError) as e:  # e.g. an older daemon without /history: the status still helps
            print(f"prngd status: no history: {e}", file=sys.stderr)
            return status, None

    answer, failed = _ask_admin(args, "asking for the status", ask)
    if failed is not None:
        return failed
    status, history = answer
    if args.json:
        sys.stdout.write(admin.render_status_json(status).decode("utf-8"))
        return 0
    from prngd import summary

    sys.stdout.write(summary.render(status, history, sparklines=_can_draw(sys.stdout)))
    return 0


def _can_draw(stream) -> bool:
    """Sparklines only for a terminal that can show the block characters; plain numbers otherwise."""
    from prngd.summary import BLOCKS

    try:
        if not stream.isatty():
            return False
        BLOCKS.encode(stream.encoding or "ascii")
    except (AttributeError, ValueError, LookupError, UnicodeError):
        return False
    return True


def _cmd_feed_kernel(args) -> int:
    from prngd import feedkernel

    return feedkernel.run_cli(args)


def _cmd_doctor(args) -> int:
    import json

    from prngd import doctor

    try:
        settings = config.load(os.path.abspath(args.config) if args.config else None)
    except config.ConfigError as e:
        print(f"prngd doctor: {e}", file=sys.stderr)
        return 2
    seed = os.path.abspath(args.seedfile) if args.seedfile else settings.resolved_seedfile()
    ctx = doctor.Context(sockets=[*args.sockets, *settings.resolved_sockets()], seedfile=seed, timeout=args.timeout)
    if args.postfix_config:
        ctx.postfix_dir = args.postfix_config
    report = doctor.run(ctx)
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else doctor.render(report))
    return 0


_COMMANDS = {"get": _cmd_get, "add": _cmd_add, "status": _cmd_status, "ping": _cmd_ping, "reseed": _cmd_reseed,
             "feed-kernel": _cmd_feed_kernel, "doctor": _cmd_doctor}
