"""The client tools: `prngd get|add|status|ping|reseed|feed-kernel|doctor ...`, thin shells over prngd.client.

prngd.cli hands a command line to `main` here when its first word names a
tool; the daemon's start never imports this module.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import stat
import sys
import time
from typing import Callable

from prngd import __version__, client, config, egd

MAX_FEED = 512  # prngd.feedkernel.MAX_FEED (not imported here: the tools start faster without it)


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


def parser() -> argparse.ArgumentParser:
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


def main(argv: list[str]) -> int:
    """`prngd get|add|status|ping|feed-kernel ...`; returns the exit status."""
    p = parser()
    commands = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices
    if argv and argv[0] in commands:
        # Options may come after SOCKET, as in `prngd get 16 --hex /run/egd-pool`:
        # plain parse_args would give SOCKET's slot away at the first positional.
        args = commands[argv[0]].parse_intermixed_args(argv[1:], argparse.Namespace(command=argv[0]))
    else:
        args = p.parse_args(argv)  # --help, --version, or a usage error
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
    start = time.perf_counter()
    with client.EGDClient(args.socket, args.timeout) as c:
        pid = c.pid()
    ms = (time.perf_counter() - start) * 1000
    print(f"{c.address}: pid {pid}, {ms:.2f} ms")
    return 0


def _ask_admin(args, doing: str, ask: Callable[[str, float], object]) -> tuple[object, int | None]:
    """(`ask(path, timeout)`'s answer, None) from the admin socket `prngd status|reseed` talks to, or
    (None, exit status) after one line saying why not."""
    from prngd import admin

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
