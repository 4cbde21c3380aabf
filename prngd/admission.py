"""Who may hold a connection, and for how long: the rules alone, without sockets or a clock of their own.

A peer is who the kernel says is at the other end, read once at accept: a
uid (int; Unix sockets by SO_PEERCRED, loopback TCP by sock_diag), a source
address (str; TCP peers on other hosts, or loopback where sock_diag is not
available), or None (a Unix peer whose uid could not be read; they count
together as one user).

- Caps: at most `max_connections` at once, and one peer at most its share,
  `max_connections_per_uid` (default a quarter of the cap).  Root is exempt
  from the share: it could stop the daemon anyway, and its clients (sshd)
  are the ones that must be served.
- Trust: a 0x03 write is credited from root and `trusted_uids`, and from an
  address only with `trust_tcp`; asked at each write, so a SIGHUP applies to
  open connections too.
- Deadlines, from times the caller passes in: `request_timeout` from a
  request's first byte to its last whatever the pace of the bytes, and from
  the last progress of replies the client leaves unread; `idle_timeout`
  (0: never) from accept or the last request.  No clock runs while the
  daemon itself is not reading (a 0x02 waiting for the first seeding).
"""

from __future__ import annotations

import math

INF = math.inf
GLOBAL_CAP, PER_UID = "global_cap", "per_uid"  # why a connection is refused, as the status counts it


def describe_peer(peer) -> str:
    if peer is None:
        return "a peer of unknown uid"
    return f"uid {peer}" if isinstance(peer, int) else str(peer)


class Admission:
    """Caps, shares, trust and deadlines for the connections of one daemon."""

    def __init__(self, settings) -> None:
        self.held_by: dict = {}  # peer -> connections it holds
        self.open = 0
        self.configure(settings)

    def configure(self, settings) -> None:
        """Take (re)loaded settings; connections already open keep going."""
        self.max_connections = settings.max_connections
        self.share = settings.max_connections_per_uid or max(1, settings.max_connections // 4)
        self.trusted_uids = frozenset([0, *settings.trusted_uids])
        self.trust_addresses = settings.trust_tcp
        self.request_timeout = settings.request_timeout
        self.idle_timeout = settings.idle_timeout

    # ------------------------------------------------------------ caps and shares

    def refusal(self, peer) -> str | None:
        """Why a new connection from `peer` is refused now (GLOBAL_CAP, PER_UID), or None."""
        if self.open >= self.max_connections:
            return GLOBAL_CAP
        if peer != 0 and self.held_by.get(peer, 0) >= self.share:
            return PER_UID
        return None

    def admit(self, peer) -> None:
        self.held_by[peer] = self.held_by.get(peer, 0) + 1
        self.open += 1

    def release(self, peer) -> None:
        left = self.held_by[peer] - 1
        if left:
            self.held_by[peer] = left
        else:
            del self.held_by[peer]
        self.open -= 1

    def held(self, peer) -> int:
        return self.held_by.get(peer, 0)

    # ------------------------------------------------------------ trust

    def trusted(self, peer) -> bool:
        """Whether `peer`'s writes are credited."""
        if isinstance(peer, int):
            return peer in self.trusted_uids
        return peer is not None and self.trust_addresses

    # ------------------------------------------------------------ deadlines

    def deadline(self, request_since: float, write_since: float, now: float, idle_allowed: bool = True) -> float:
        """When a connection must be closed: `request_since` is a half-received request's first byte,
        `write_since` the last progress of unread replies (INF: none), `now` the last activity."""
        since = write_since if write_since < request_since else request_since
        if since != INF:
            return since + self.request_timeout
        if idle_allowed and self.idle_timeout > 0:
            return now + self.idle_timeout
        return INF

    def expiry(self, request_since: float, write_since: float) -> str:
        """Why a connection whose deadline has come is closed; "idle" is not an error."""
        if write_since != INF and write_since <= request_since:
            return f"replies unread for {self.request_timeout:g}s"
        if request_since != INF:
            return f"request incomplete after {self.request_timeout:g}s"
        return "idle"
