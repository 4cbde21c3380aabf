"""Command line: `prngd [options] SOCKET...` as PRNGD takes it.

`prngd get|add|status|ping|reseed|feed-kernel|doctor ...` are the client
tools (prngd.tools); anything else starts (or with -k stops) the daemon.  A
socket literally named like a tool can be given as ./NAME.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys

# What only the tools, -k, -u or syslog use (prngd.tools, prngd.kill, grp,
# logging.handlers) is imported where used: the daemon's start does not wait for it.
from prngd import __version__, config, cryptobackend, ownfile, privileges, startsignals

CLIENT_COMMANDS = ("get", "add", "status", "ping", "reseed", "feed-kernel", "doctor")

log = logging.getLogger("prngd")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in CLIENT_COMMANDS:
        startsignals.restore()  # Ctrl-C stops a tool at once
        gc.enable()  # off while the command started (prngd/__main__.py)
        stop = startsignals.stop_requested()
        if stop:  # while it was starting
            return 128 + stop
        from prngd import tools  # the tools' module: the daemon's start never loads it

        return tools.main(argv)
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

    Returns the write end of a pipe in the child, which has already written
    its pid there (write READY when serving).  The parent then says where the
    log goes and exits 0, or exits 1 if the child ended without serving (its
    error was shown on the terminal).  A SIGINT or SIGTERM the waiting parent
    gets (Ctrl-C, a service manager, `timeout`) goes on to the child, whose
    start then stops quietly (prngd.startsignals); the parent exits 0 with it.
    """
    r, w = os.pipe()
    if os.fork():
        os.close(w)
        _wait_for_child(r, destination)
    os.close(r)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.write(w, f"{os.getpid()}\n".encode())
    os.chdir("/")
    return w


READY = b"ready\n"


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass  # it has ended: its end closes the pipe, and the parent with it


def _wait_for_child(r: int, destination: str) -> None:
    """The detaching parent: pass signals on to the child until it serves or ends, then exit."""
    import signal

    child = 0
    got: list[int] = []

    def forward(signum: int, frame) -> None:
        got.append(signum)
        if child:
            _signal(child, signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    early = startsignals.stop_requested()  # came between the fork and the handlers
    if early:
        got.append(early)
    said = b""
    while chunk := os.read(r, 64):
        said += chunk
        if not child and b"\n" in said:
            child = int(said.split(b"\n", 1)[0])
            for signum in got[:1]:
                _signal(child, signum)
    pid, _, rest = said.partition(b"\n")
    if rest != READY:
        os._exit(0 if got else 1)
    where = "syslog" if destination == "syslog" else destination
    print(f"prngd: serving in the background, pid {int(pid)}; logging to {where}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(0)


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
            os.write(ready_fd, READY)
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
