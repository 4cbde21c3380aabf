"""`prngd -k SOCKET`: stop the prngd that really serves SOCKET, and nothing else.

PRNGD's -k signalled whatever pid the socket's 0x04 answer named, so a fake
EGD server, or a socket shared into a container from another pid namespace,
could aim it at any process.  Here the named pid must be the process that
listens on the socket, match the pidfile when one is given, and be a prngd;
any doubt refuses with one line, and the signal goes through a pidfd.
"""

from __future__ import annotations

import ipaddress
import os
import select
import signal
import socket
import sys

from prngd import client, egd
from prngd.pidfile import cmdline, is_prngd_argv
from prngd.peercred import credentials


def kill_daemons(specs: list[str], pidfile: str | None = None, timeout: float = 30.0) -> int:
    """`prngd -k SOCKET...`: every socket is identified first, then each daemon found is stopped once.

    A daemon serving several of the sockets is stopped once, not refused at
    its second socket for being gone.  Exit status 0 when every socket named
    a daemon that then stopped; 1 as soon as one could not be confirmed or stopped.
    """
    serving: dict[int, list[str]] = {}
    worst = 0 if specs else 1
    for spec in specs:
        pid = _identify(spec, pidfile)
        if pid is None:
            worst = 1
        else:
            serving.setdefault(pid, []).append(spec)
    for pid, its_specs in serving.items():
        worst = max(worst, _stop(pid, ", ".join(its_specs), timeout))
    return worst


def _identify(spec: str, pidfile: str | None) -> int | None:
    """The pid of the prngd that really serves SOCKET, or None with one line saying why not.

    The pid the server names (0x04) must be the process that listens on the
    socket: SO_PEERCRED of our connection on a Unix socket, the holder of the
    listening socket (found in /proc) on TCP.  It must match the pidfile when
    one is given (and /proc/PID/cmdline must be a prngd's: checked by `_stop`
    through the pidfd).  Any doubt refuses.
    """

    def refuse(why: str) -> None:
        print(f"prngd: not stopping anything on {spec}: {why}", file=sys.stderr)
        return None

    try:
        address = egd.parse_address(spec)
        said, listener = _ask_pid(address)
    except (ValueError, client.EGDError) as e:
        print(f"prngd: no daemon answers on {spec}: {e}", file=sys.stderr)
        return None
    if address.is_unix:
        if listener == 0:
            return refuse(f"its 0x04 answer names pid {said}, but the process listening there is in another "
                          "pid namespace (a socket shared into a container?); stop the daemon where it runs")
        if listener != said:
            hint = " (socket activation? stop it with systemctl)" if listener == 1 else ""
            return refuse(f"the socket is served by pid {listener}{hint}, but its 0x04 answer names pid {said}")
    elif listener is None:
        return refuse(f"pid {said}, named by its 0x04 answer, does not hold the listening socket of port "
                      f"{address.port} in this network namespace (or may not be inspected)")
    if pidfile:
        try:
            with open(pidfile) as f:
                recorded = int(f.read().strip())
        except (OSError, ValueError) as e:
            return refuse(f"cannot read a pid from the pidfile {pidfile}: {getattr(e, 'strerror', None) or e}")
        if recorded != said:
            return refuse(f"the pidfile {pidfile} names pid {recorded}, but the socket is served by pid {said}")
    return said


def _stop(pid: int, spec: str, timeout: float) -> int:
    """SIGTERM `pid` through a pidfd if it is a prngd, and wait for it to exit; the exit status for -k."""
    try:
        # From here on the pid cannot be reused under us: we signal through the pidfd.
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        print(f"prngd: not stopping anything on {spec}: pid {pid} is gone", file=sys.stderr)
        return 1
    try:
        argv = cmdline(pid)
        if not is_prngd_argv(argv):
            shown = " ".join(argv)[:80] or "unknown"
            print(f"prngd: not stopping anything on {spec}: pid {pid} is not a prngd ({shown})", file=sys.stderr)
            return 1
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        except ProcessLookupError:
            print(f"prngd: daemon pid {pid} on {spec} is gone", file=sys.stderr)
            return 1
        except PermissionError:
            print(f"prngd: not allowed to signal pid {pid}", file=sys.stderr)
            return 1
        # The pidfd becomes readable when the process exits (a zombie has: its
        # parent may simply not have reaped it yet).
        if select.select([pidfd], [], [], timeout)[0]:
            print(f"prngd: stopped pid {pid} on {spec}", file=sys.stderr)
            return 0
        print(f"prngd: pid {pid} did not stop within {timeout:g}s", file=sys.stderr)
        return 1
    finally:
        os.close(pidfd)


def _ask_pid(address: egd.Address) -> tuple[int, int | None]:
    """(the pid the server names with 0x04, the pid of the process listening there or None)."""
    try:
        if address.is_unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(5.0)
                sock.connect(address.path)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection((address.host, address.port), timeout=5.0)
    except OSError as e:
        raise client.error_for(e, address, "connecting") from e
    with sock:
        try:
            sock.sendall(b"\x04")
            reply = b""
            while len(reply) < 1 or len(reply) < 1 + reply[0]:
                chunk = sock.recv(256)
                if not chunk:
                    raise ConnectionResetError()
                reply += chunk
        except OSError as e:
            raise client.error_for(e, address, "asking for the pid") from e
        try:
            said = int(reply[1:1 + reply[0]].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise client.EGDError(f"the server answered 0x04 with {reply!r}, not a process id") from None
        if address.is_unix:
            # struct ucred of the process that called listen(); pid 0 when it
            # is in a pid namespace we cannot see.
            creds = credentials(sock)
            return said, creds[0] if creds else 0
        return said, said if _holds_tcp_listener(said, sock.getpeername()) else None


def _tcp_listener_inodes(peer) -> set[int]:
    """Socket inodes listening on the peer's address and port (or a wildcard address), from /proc/net."""
    ip, port = ipaddress.ip_address(peer[0]), peer[1]
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state != "0A":  # TCP_LISTEN
                continue
            host_hex, port_hex = local.split(":")
            raw = bytes.fromhex(host_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            listen_ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
            if int(port_hex, 16) == port and (listen_ip == ip or listen_ip.is_unspecified):
                inodes.add(inode)
    return inodes


def _holds_tcp_listener(pid: int, peer) -> bool:
    inodes = {f"socket:[{i}]" for i in _tcp_listener_inodes(peer)}
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return True
            except OSError:
                continue
    except OSError:
        pass
    return False
