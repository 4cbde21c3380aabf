"""systemd socket activation and readiness notification, with the standard library only.

The two halves of libsystemd a daemon needs, as documented in sd_listen_fds(3)
and sd_notify(3):

- `listen_fds()`: the sockets systemd opened for us (a `.socket` unit).  They
  start at fd 3; `LISTEN_FDS` says how many, `LISTEN_PID` must be our pid (the
  variables are inherited by children, who must not take the sockets), and
  `LISTEN_FDNAMES` names them (`FileDescriptorName=`).
- `notify()`: a datagram to `$NOTIFY_SOCKET` (a path, or `@name` for an
  abstract socket) such as "READY=1", "STOPPING=1", "RELOADING=1" or
  "STATUS=...".  Without systemd it does nothing and returns False.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds_with_names(unset_environment: bool = True) -> list[tuple[socket.socket, str]]:
    """(socket, name) for each socket passed by systemd; [] when none were passed to this process.

    Each fd gets FD_CLOEXEC, so commands the daemon runs do not inherit it.
    The name is the unit's FileDescriptorName= ("unknown" when not given).
    Raises ValueError when LISTEN_FDS is malformed; a passed fd that is not a
    socket is left alone and logged.
    """
    env = os.environ
    try:
        pid_text, count_text = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
        if not pid_text or not count_text:
            return []
        if not pid_text.isdigit() or int(pid_text) != os.getpid():
            return []  # meant for another process (we inherited the environment)
        if not count_text.isdigit():
            raise ValueError(f"LISTEN_FDS is not a number: {count_text!r}")
        count = int(count_text)
        names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
        if len(names) != count:
            names = ["unknown"] * count
        out = []
        for i in range(count):
            fd = SD_LISTEN_FDS_START + i
            try:
                os.set_inheritable(fd, False)
                sock = socket.socket(fileno=fd)  # family, type and protocol come from the fd itself
            except OSError as e:
                log.warning("systemd passed fd %d (%s), which is not a usable socket: %s", fd, names[i], e.strerror)
                continue
            out.append((sock, names[i]))
        return out
    finally:
        if unset_environment:
            for var in _LISTEN_VARS:
                os.environ.pop(var, None)


def listen_fds(unset_environment: bool = True) -> list[socket.socket]:
    """The sockets passed by systemd socket activation, in order ([] when none)."""
    return [sock for sock, _ in listen_fds_with_names(unset_environment)]


def notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1\\nSTATUS=serving") to systemd; False when not under systemd or on failure."""
    target = os.environ.get("NOTIFY_SOCKET", "")
    if not target:
        return False
    if target.startswith("@"):
        address = "\0" + target[1:]  # abstract namespace
    elif target.startswith("/"):
        address = target
    else:
        log.debug("NOTIFY_SOCKET=%r is not a kind of socket we can send to", target)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode("utf-8"), address)
        return True
    except OSError as e:
        log.debug("cannot notify systemd at %s: %s", target, e)
        return False
