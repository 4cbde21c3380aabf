"""Listening sockets: bound (or taken from systemd) before anything else, closed at stop.

A Unix socket replaces only a stale socket at its path, never a live one or
anything that is not a socket (ownfile.py), and never creates the directory it goes in;
TCP listens on loopback unless told otherwise (EGD has no authentication).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

from prngd import egd, ownfile
from prngd.config import Settings



class StartupError(Exception):
    """The daemon cannot start (socket busy, bad address...); the message is for the user."""


class Listener:
    """A listening socket and what the daemon knows of it (a plain class: a dataclass's
    decoration was paid by every start)."""

    __slots__ = ("spec", "sock", "path", "is_unix", "pr")

    def __init__(self, spec: str, sock: socket.socket, path: str | None, is_unix: bool, pr: bool = False) -> None:
        self.spec = spec  # as the user wrote it, for messages
        self.sock = sock
        self.path = path  # Unix socket file we created and must remove (None: TCP, or systemd's)
        self.is_unix = is_unix
        self.pr = pr  # prediction resistance: a reseed from the kernel before every read (`SOCKET,pr`)

    def __repr__(self) -> str:
        return f"Listener(spec={self.spec!r}, path={self.path!r}, is_unix={self.is_unix!r}, pr={self.pr!r})"




# sun_path holds 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107


def bind_unix(path: str, mode: int) -> socket.socket:
    """Bind a Unix stream socket at `path`, replacing a stale one, refusing a live one.

    The directory must exist: a typo must not create a tree of directories.
    """
    size = len(os.fsencode(path))
    if size > UNIX_PATH_MAX:
        raise StartupError(f"{path}: socket path is {size} bytes, over the {UNIX_PATH_MAX}-byte limit "
                           "of a Unix socket path")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise StartupError(f"cannot bind {path}: directory {parent} {what}")
    problem = ownfile.clear_socket_path(path)  # a stale socket goes; a live one, or no socket, stays
    if problem:
        raise StartupError(problem)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bind under a umask that gives no more than `mode`, so the socket is never
    # briefly wider open than asked; then set the exact mode.
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise StartupError(f"cannot bind {path}: {e.strerror or e}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    sock.listen(socket.SOMAXCONN)
    sock.setblocking(False)
    return sock


def no_delay(listener: socket.socket) -> None:
    # Each reply leaves in one send and must not wait for the ACK of the one
    # before (Nagle).  Linux hands the option on to every accepted socket:
    # set once here, it spares a system call per connection.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def bind_tcp(address: egd.Address, allow_remote: bool) -> list[socket.socket]:
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise StartupError(f"{address}: {e.strerror}") from None
    socks = []
    seen = set()
    for family, type_, proto, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6) or sockaddr[:2] in seen:
            continue
        seen.add(sockaddr[:2])
        if not ipaddress.ip_address(sockaddr[0]).is_loopback and not allow_remote:
            raise StartupError(f"{address} is not a loopback address; set allow_remote = yes to listen there")
        s = socket.socket(family, type_, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind(sockaddr)
        except OSError as e:
            s.close()
            for other in socks:
                other.close()
            msg = "another daemon is already serving on this port" if e.errno == errno.EADDRINUSE else e.strerror
            raise StartupError(f"{address}: {msg}") from None
        s.listen(socket.SOMAXCONN)
        s.setblocking(False)
        no_delay(s)
        socks.append(s)
    if not socks:
        raise StartupError(f"{address}: no usable address")
    return socks


def bind_vsock(address: egd.Address) -> socket.socket:
    """Listen on AF_VSOCK (`vsock:PORT`), so a host's prngd serves its VM guests."""
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise StartupError(f"{address}: this Python has no AF_VSOCK")
    try:
        s = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise StartupError(f"{address}: AF_VSOCK is not available here ({e.strerror}; "
                           "on a host, load vhost_vsock)") from None
    try:
        s.bind((address.cid, address.port))
        s.listen(socket.SOMAXCONN)
    except OSError as e:
        s.close()
        msg = "another daemon is already serving on this port" if e.errno == errno.EADDRINUSE else e.strerror
        raise StartupError(f"{address}: {msg}") from None
    s.setblocking(False)
    return s


def fd_name_options(name: str) -> tuple[str, ...]:
    """The socket options in a systemd FileDescriptorName=, as a socket spec takes them: `egd,pr`
    (or just `pr`) asks for prediction resistance.  An unknown option is a StartupError."""
    label, options = egd.split_options(name)  # the name stands where a socket's address would
    if label.strip() in egd.SOCKET_OPTIONS:  # `pr` alone
        return tuple(dict.fromkeys((label.strip(), *options)))
    if "," in label:  # a word after a comma that is no option
        raise StartupError(f"unknown socket option {label.rpartition(',')[2].strip()!r} in the name {name!r} "
                           f"systemd gave a socket (FileDescriptorName=; known: {', '.join(egd.SOCKET_OPTIONS)})")
    return options


def open_listeners(settings: Settings, inherited: list[tuple[socket.socket, str]] | None = None) -> list[Listener]:
    """Bind the configured sockets, or take those systemd passed as (socket, FileDescriptorName=)."""
    if inherited:
        out = []
        for s, fd_name in inherited:
            pr = "pr" in fd_name_options(fd_name)
            s.setblocking(False)
            is_unix = s.family == socket.AF_UNIX
            if not is_unix:
                no_delay(s)
            name = s.getsockname()
            spec = name if isinstance(name, str) else f"{name[0]}:{name[1]}"
            spec = spec or "<inherited>"
            out.append(Listener(spec + (",pr" if pr else ""), s, None, is_unix, pr))
        return out
    out: list[Listener] = []
    seen: dict = {}
    try:
        for spec in settings.resolved_sockets():
            try:
                address = egd.parse_address(spec)
            except ValueError as e:
                raise StartupError(str(e)) from None
            key = (os.path.normpath(address.path) if address.is_unix else
                   ("vsock", address.port) if address.is_vsock else (address.host, address.port))
            if key in seen:
                also = f" (also as {seen[key]})" if seen[key] != spec else ""
                raise StartupError(f"socket {spec} is given twice{also}; name each socket once")
            seen[key] = spec
            pr = "pr" in address.options
            if address.is_unix:
                sock = bind_unix(address.path, settings.socket_mode)
                out.append(Listener(spec, sock, address.path, True, pr))
            elif address.is_vsock:
                out.append(Listener(spec, bind_vsock(address), None, False, pr))
            else:
                try:
                    socks = bind_tcp(address, settings.allow_remote)
                except StartupError:
                    # Another spelling of a port we bound a moment ago (localhost:708, 127.0.0.1:708).
                    mine = [lst.spec for lst in out if lst.sock.family in (socket.AF_INET, socket.AF_INET6)
                            and lst.sock.getsockname()[1] == address.port]
                    if mine:
                        raise StartupError(f"socket {spec} is given twice (also as {mine[0]}); "
                                           "name each socket once") from None
                    raise
                for sock in socks:
                    out.append(Listener(spec, sock, None, False, pr))
    except BaseException:
        close_listeners(out)
        raise
    return out


def close_listeners(listeners: list[Listener]) -> None:
    for lst in listeners:
        lst.sock.close()
        if lst.path:
            ownfile.remove_stale_socket(lst.path)  # ours, now closed; not one bound there since
