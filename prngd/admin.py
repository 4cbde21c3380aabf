"""The admin endpoint: status and history as JSON, metrics for Prometheus, over a private Unix socket.

The EGD protocol has no status command, so the daemon serves a second Unix
socket (mode 0600 by default: the owner only) speaking just enough HTTP/1.0
for curl and Prometheus' scrapers:

    curl --unix-socket /var/run/egd-pool.admin http://localhost/status
    curl --unix-socket /var/run/egd-pool.admin http://localhost/metrics

`GET /status` answers the status dict as JSON (docs/status.schema.json),
`GET /metrics` the Prometheus text exposition format 0.0.4, `GET /history`
the recent-history ring as JSON (docs/history.schema.json), `GET /` the list
of these endpoints, anything else 404.  `POST /reseed` (`prngd reseed`)
reseeds the pool from the kernel and rewrites the seed file, as a detected
restore does, for root or the daemon's own user only (SO_PEERCRED): a socket
opened to monitoring (admin_mode 0666) gives nobody else that.
One request a connection, then close.  A request head may take 4 KiB and
5 seconds; past that, or on garbage, the peer gets a 4xx and the connection
closes; nothing a peer sends can stop the endpoint.  At most MAX_HANDLERS (8)
connections are handled at once; one more is closed at once, with a
rate-limited log line.

`respond()` turns a request head into response bytes without I/O, so the rules
are tested without sockets; `serve_admin()` only moves bytes.  `get_status()`
and `fetch_status()` are the client side, used by `prngd status`.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import socket
import time
from typing import Any, Awaitable, Callable

import trio

from prngd.peercred import peer_uid

log = logging.getLogger(__name__)

MAX_HEAD = 4096  # bytes a request line plus headers may take
READ_TIMEOUT = 5.0  # seconds a peer has to send its request head
WRITE_TIMEOUT = 5.0  # seconds a peer has to take the response
DRAIN_TIMEOUT, DRAIN_LIMIT = 1.0, 1 << 16  # unread input taken before closing
MAX_RESPONSE = 16 << 20  # what the client side reads at most
MAX_HANDLERS = 8  # connections handled at once; the daemon keeps descriptors for them beside max_connections
REFUSAL_LOG_PERIOD = 10.0
ACCEPT_PAUSE = 0.1  # after accept failed for want of descriptors or memory

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_TYPE = "application/json"

_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout",
            431: "Request Header Fields Too Large", 500: "Internal Server Error"}


class AdminError(Exception):
    """The admin socket answered something other than a usable status."""


# ---------------------------------------------------------------- server side: bytes -> response (no I/O)

def _response(code: int, body: bytes, content_type: str = "text/plain; charset=utf-8", *, head_only: bool = False,
              extra: str = "") -> bytes:
    head = (f"HTTP/1.0 {code} {_REASONS[code]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Cache-Control: no-store\r\n"
            f"{extra}"
            "Connection: close\r\n\r\n").encode("ascii")
    return head if head_only else head + body


def _error(code: int, head_only: bool = False, extra: str = "") -> bytes:
    return _response(code, f"{code} {_REASONS[code]}\n".encode("ascii"), head_only=head_only, extra=extra)


# path -> what it serves, for the index at `/`
ENDPOINTS = {
    "/status": "the daemon's status as JSON (docs/status.schema.json)",
    "/metrics": "Prometheus metrics, text exposition format 0.0.4",
    "/history": "recent history as JSON, one point every history_interval seconds (docs/history.schema.json)",
}


def render_index() -> bytes:
    return ("".join(f"{path:<10} {text}\n" for path, text in ENDPOINTS.items())).encode("utf-8")


def respond(head: bytes, get_status: Callable[[], dict], get_history: Callable[[], dict] | None = None) -> bytes:
    """The complete response to a request head (request line and headers). Never raises."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split()
    if len(parts) not in (2, 3) or not parts[1].startswith(b"/") or (len(parts) == 3 and
                                                                      not parts[2].startswith(b"HTTP/")):
        return _error(400)
    method, target = parts[0], parts[1]
    head_only = method == b"HEAD"
    if method not in (b"GET", b"HEAD"):
        return _error(405, extra="Allow: GET, HEAD\r\n")
    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    if path == b"/":
        return _response(200, render_index(), head_only=head_only)
    if path not in (b"/status", b"/metrics", b"/history") or (path == b"/history" and get_history is None):
        return _error(404, head_only)
    try:
        if path == b"/history":
            return _response(200, render_history_json(get_history()), JSON_TYPE, head_only=head_only)
        status = get_status()
        if path == b"/status":
            return _response(200, render_status_json(status), JSON_TYPE, head_only=head_only)
        return _response(200, render_metrics(status).encode("utf-8"), METRICS_TYPE, head_only=head_only)
    except Exception:
        log.exception("admin: cannot build the %s answer", path.decode("ascii", "replace"))
        return _error(500, head_only)


def _head_complete(buf: bytes) -> bool:
    return b"\r\n\r\n" in buf or b"\n\n" in buf


async def _read_head(stream: trio.abc.ReceiveStream) -> tuple[bytes, int | None]:
    """(head, None) once a blank line ends it, or (partial head, error code) when that cannot happen."""
    buf = b""
    with trio.move_on_after(READ_TIMEOUT):
        while not _head_complete(buf):
            if len(buf) >= MAX_HEAD:
                return buf, 431
            chunk = await stream.receive_some(MAX_HEAD - len(buf))
            if not chunk:
                # EOF: a complete request line is enough (`printf 'GET /status\n' | nc -U ...`).
                return buf, None if b"\n" in buf else 400
            buf += chunk
        return buf, None
    return buf, 408


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    """Read what the peer still sends, briefly, before closing: closing a socket with
    unread input resets the connection, and the peer could lose the response."""
    with trio.move_on_after(DRAIN_TIMEOUT):
        left = DRAIN_LIMIT
        while left > 0:
            chunk = await stream.receive_some(min(left, 65536))
            if not chunk:
                return
            left -= len(chunk)


Reseed = Callable[[int], Awaitable[str]]  # the asking uid -> one line saying what was done


def _is_reseed(head: bytes) -> bool:
    return head.split(b"\n", 1)[0].split()[:2] == [b"POST", b"/reseed"]


async def _reseed_reply(stream: trio.SocketStream, reseed: Reseed | None) -> bytes:
    """`POST /reseed`: only root or the daemon's own user may make the daemon reseed and write."""
    if reseed is None:
        return _error(404)
    uid, own = peer_uid(stream.socket), os.geteuid()
    if uid not in (0, own):
        log.warning("admin: reseed refused to uid %s: only root or the daemon's user (uid %d) may ask", uid, own)
        return _response(403, f"only root or the daemon's user (uid {own}) may ask for a reseed\n".encode())
    try:
        return _response(200, f"{await reseed(uid)}\n".encode("utf-8"))
    except Exception:
        log.exception("admin: reseed failed")
        return _error(500)


async def _handle(stream: trio.SocketStream, get_status: Callable[[], dict],
                  get_history: Callable[[], dict] | None, reseed: Reseed | None = None) -> None:
    try:
        try:
            head, error = await _read_head(stream)
            if error is None and _is_reseed(head):
                reply = await _reseed_reply(stream, reseed)
            else:
                reply = respond(head, get_status, get_history) if error is None else _error(error)
            with trio.move_on_after(WRITE_TIMEOUT):
                await stream.send_all(reply)
                await stream.send_eof()
            await _drain(stream)
        finally:
            await trio.aclose_forcefully(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return  # the peer went away; nothing to tell it
    except Exception:
        log.exception("admin: error on a connection")


class _Refusals:
    """Connections refused for want of a handler: one log line at most every REFUSAL_LOG_PERIOD seconds."""

    def __init__(self) -> None:
        self.last = -math.inf
        self.unlogged = 0

    def note(self, cap: int) -> None:
        self.unlogged += 1
        now = time.monotonic()
        if now - self.last >= REFUSAL_LOG_PERIOD:
            log.warning("admin: all %d handlers busy, %d connection(s) refused (logged at most every %g s)",
                        cap, self.unlogged, REFUSAL_LOG_PERIOD)
            self.last, self.unlogged = now, 0


async def serve_admin(sock: trio.socket.SocketType, get_status: Callable[[], dict],
                      get_history: Callable[[], dict] | None = None, *, reseed: Reseed | None = None,
                      max_handlers: int = MAX_HANDLERS,
                      task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Answer admin requests on `sock` (bound and listening) until cancelled.

    `get_status()` is called for each /status or /metrics request and returns
    the status dict; `get_history()` for each /history request (None: no
    /history); `reseed(uid)` for each allowed POST /reseed (None: 404).
    The caller owns the socket's path and mode.  At most `max_handlers`
    connections are handled at once: one more is closed at once, so the
    endpoint holds a bounded share of the daemon's descriptors.
    """
    listener = trio.SocketListener(sock)
    refusals = _Refusals()
    busy = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal busy
        try:
            await _handle(stream, get_status, get_history, reseed)
        finally:
            busy -= 1

    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            try:
                stream = await listener.accept()
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                    raise
                log.error("admin: accept failed: %s; retrying in %g s", e.strerror, ACCEPT_PAUSE)
                await trio.sleep(ACCEPT_PAUSE)
                continue
            if busy >= max_handlers:
                stream.socket.close()
                refusals.note(max_handlers)
                continue
            busy += 1
            nursery.start_soon(handle, stream)


# ---------------------------------------------------------------- renderings

def _json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: those become null; tuples and sets become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v) for v in value]
    return value


def render_status_json(status: dict) -> bytes:
    return (json.dumps(_json_safe(status), indent=2, default=str, allow_nan=False) + "\n").encode("utf-8")


def render_history_json(history: dict) -> bytes:
    # One line a point: 1440 points stay readable and about 0.3 MB.
    points = history.get("points") or []
    fields = [f"{json.dumps(str(k))}: {json.dumps(_json_safe(v), allow_nan=False)}"
              for k, v in history.items() if k != "points"]
    lines = [json.dumps(_json_safe(p), separators=(",", ":"), allow_nan=False) for p in points]
    fields.append('"points": [' + ("\n  " + ",\n  ".join(lines) + "\n" if lines else "") + "]")
    body = "{" + ", ".join(fields) + "}\n"
    return body.encode("utf-8")


def _escape_label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str | None:
    """A sample value in the exposition format, or None to leave the sample out."""
    if value is None or isinstance(value, (str, bytes, dict, list)):
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


class _Exposition:
    """Families in the text format 0.0.4: HELP and TYPE lines, then the samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: list[tuple[dict, Any]]) -> None:
        rendered = []
        for labels, value in samples:
            text = _number(value)
            if text is None:
                continue
            label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            rendered.append(f"{name}{{{label_text}}} {text}" if label_text else f"{name} {text}")
        if not rendered:
            return
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        self.lines.extend(rendered)

    def one(self, name: str, kind: str, help_text: str, value: Any) -> None:
        self.family(name, kind, help_text, [({}, value)])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(status: dict) -> str:
    """The status dict as Prometheus metrics; parts missing from the dict are left out."""
    m = _Exposition()
    pool = status.get("pool") or {}
    m.family("prngd_build_info", "gauge", "Always 1; the version is a label.",
             [({"version": status.get("version", "unknown")}, 1)])
    m.one("prngd_uptime_seconds", "gauge", "Seconds since the daemon started.", status.get("uptime_s"))
    m.one("prngd_seeded", "gauge", "1 once the generator has been seeded with enough entropy.", status.get("seeded"))
    m.one("prngd_entropy_bits", "gauge", "Entropy the pool claims to hold, in bits.", status.get("entropy_bits"))
    m.one("prngd_low_entropy", "gauge", "1 while the estimate is under the low-water mark.", status.get("low_entropy"))
    m.one("prngd_reseeds_total", "counter", "Generator reseeds.", status.get("reseeds", pool.get("reseeds")))
    m.one("prngd_generated_bytes_total", "counter", "Bytes the generator has produced.", pool.get("bytes_out"))
    m.one("prngd_credited_bits_total", "counter", "Entropy credited to the pool, in bits.",
          pool.get("credited_bits_total"))
    m.one("prngd_last_reseed_age_seconds", "gauge", "Seconds since the last reseed.", pool.get("last_reseed_age_s"))
    m.one("prngd_pr_reseeds_total", "counter", "Reseeds from the kernel before a read on a prediction-resistant socket.",
          pool.get("pr_reseeds"))
    m.one("prngd_restores_total", "counter",
          "VM restores and `prngd reseed` requests the pool was reseeded for (the status's restore_generation).",
          status.get("restore_generation"))

    requests = status.get("requests") or {}
    m.family("prngd_requests_total", "counter", "EGD requests served, by command.",
             [({"command": cmd}, n) for cmd, n in sorted(requests.items())])
    m.one("prngd_bytes_served_total", "counter", "Random bytes sent to EGD clients.", status.get("bytes_served"))
    m.one("prngd_protocol_errors_total", "counter", "Connections closed for breaking the EGD protocol.",
          status.get("protocol_errors"))

    conns = status.get("connections") or {}
    m.family("prngd_connections", "gauge", "Open EGD connections.", [({"state": "current"}, conns.get("current"))])
    m.one("prngd_connections_max", "gauge", "Open EGD connections allowed at once.", conns.get("max"))
    # Not prngd_connections_total: with the gauge above it would make one family of two types.
    m.one("prngd_connections_accepted_total", "counter", "EGD connections accepted.", conns.get("total"))
    by_reason = conns.get("rejected_by_reason")
    if isinstance(by_reason, dict):
        m.family("prngd_connections_rejected_total", "counter",
                 "EGD connections refused, by the limit they were over (max_connections, max_connections_per_uid).",
                 [({"reason": reason}, n) for reason, n in sorted(by_reason.items())])
    else:
        m.one("prngd_connections_rejected_total", "counter", "EGD connections refused for being over the limit.",
              conns.get("rejected"))

    sources = [s for s in status.get("sources") or [] if isinstance(s, dict) and "name" in s]

    def per_source(key: str) -> list[tuple[dict, Any]]:
        return [({"source": s["name"]}, s.get(key)) for s in sources]

    m.family("prngd_source_info", "gauge", "Always 1; the kind of each entropy source is a label.",
             [({"source": s["name"], "kind": s.get("kind", "")}, 1) for s in sources])
    m.family("prngd_source_enabled", "gauge", "1 if the source is enabled.", per_source("enabled"))
    m.family("prngd_source_healthy", "gauge", "1 if the source passes its health tests.", per_source("healthy"))
    m.family("prngd_source_samples_total", "counter", "Samples taken from the source.", per_source("samples"))
    m.family("prngd_source_credited_bits_total", "counter", "Entropy credited from the source, in bits.",
             per_source("credited_bits"))
    m.family("prngd_source_failures_total", "counter", "Failed samples from the source.", per_source("failures"))

    seed = status.get("seedfile")
    if isinstance(seed, dict):
        m.one("prngd_seed_loaded", "gauge", "1 if a seed file was loaded at start.", seed.get("loaded"))
        m.one("prngd_seed_credited_bits", "gauge", "Entropy credited from the seed file at start, in bits.",
              seed.get("credited_bits"))
        m.one("prngd_seed_saves_total", "counter", "Seed file saves.", seed.get("saves"))
        m.one("prngd_seed_save_failures_total", "counter", "Failed seed file saves.", seed.get("failures"))
        m.one("prngd_seed_last_save_timestamp_seconds", "gauge", "Unix time of the last seed file save.",
              seed.get("last_save"))
    exch = status.get("exchange")
    if isinstance(exch, dict):
        m.one("prngd_exchange_updates_total", "counter", "Exchange file updates.", exch.get("updates"))
        m.one("prngd_exchange_failures_total", "counter", "Failed exchange file updates.", exch.get("failures"))
    return m.text()


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    mi, s = divmod(s, 60)
    return (f"{d}d " if d else "") + (f"{h}h " if d or h else "") + f"{mi}m {s}s"


def render_status_text(status: dict) -> str:
    """The status for people: a few lines, most important first."""
    g = status.get
    pool = g("pool") or {}
    out = [f"prngd {g('version', '?')}, pid {g('pid', '?')}, up {_duration(g('uptime_s') or 0)}"]
    seeded = "seeded" if g("seeded") else "NOT SEEDED"
    low = ", LOW" if g("low_entropy") else ""
    line = f"pool:        {g('generator', pool.get('generator', '?'))}, {seeded}, {g('entropy_bits', '?')} bits{low}, " \
           f"{g('reseeds', pool.get('reseeds', 0))} reseeds"
    if pool.get("last_reseed_age_s") is not None:
        line += f", last {_duration(pool['last_reseed_age_s'])} ago"
    out.append(line)
    if g("detectors"):
        out.append(f"detectors:   {', '.join(map(str, g('detectors')))}; "
                   f"{pool.get('clock_reseeds', 0)} resumes or restores seen")
    conns = g("connections") or {}
    line = (f"connections: {conns.get('current', 0)} open (max {conns.get('max', '?')}), "
            f"{conns.get('total', 0)} total, {conns.get('rejected', 0)} rejected")
    by_reason = conns.get("rejected_by_reason")
    if isinstance(by_reason, dict) and conns.get("rejected"):
        line += " (" + ", ".join(f"{reason} {n}" for reason, n in by_reason.items()) + ")"
    out.append(line)
    reqs = g("requests") or {}
    out.append("requests:    " + ", ".join(f"{k} {v}" for k, v in reqs.items())
               + f"; {g('bytes_served', 0)} bytes served; {g('protocol_errors', 0)} protocol errors")
    sources = g("sources") or []
    if sources:
        out.append("sources:")
        width = max(len(str(s.get("name", ""))) for s in sources)
        for s in sources:
            state = "disabled" if not s.get("enabled", True) else ("ok" if s.get("healthy", True) else "UNHEALTHY")
            line = (f"  {str(s.get('name', '?')):<{width}}  {str(s.get('kind', '')):<8} {state:<9} "
                    f"{s.get('samples', 0)} samples, {s.get('credited_bits', 0):g} bits, {s.get('failures', 0)} failures")
            if s.get("last_error"):
                line += f" (last: {s['last_error']})"
            out.append(line)
    seed = g("seedfile")
    if isinstance(seed, dict):
        line = (f"seed file:   {seed.get('path')}, {'loaded' if seed.get('loaded') else 'not loaded'}, "
                f"{seed.get('credited_bits', 0)} bits credited, {seed.get('saves', 0)} saves")
        if seed.get("last_save"):
            line += f", last {_duration(max(0.0, time.time() - seed['last_save']))} ago"
        if seed.get("failures"):
            line += f", {seed['failures']} failures (last: {seed.get('last_error')})"
        line += f"; {seed['note']}" if seed.get("note") else (f"; written on {seed['origin']}" if seed.get("origin") else "")
        out.append(line)
    else:
        out.append("seed file:   none")
    exch = g("exchange")
    if isinstance(exch, dict):
        line = f"exchange:    {exch.get('path')}, {exch.get('updates', 0)} updates"
        if exch.get("failures"):
            line += f", {exch['failures']} failures (last: {exch.get('last_error')})"
        out.append(line)
    out.append("sockets:     " + (", ".join(g("sockets") or []) or "none"))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- client side

def _request(target: str, method: str = "GET") -> bytes:
    return f"{method} {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode("ascii")


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status code, headers with lower-case names, body) of an HTTP/1.x response."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise AdminError("the admin socket closed before a complete HTTP response")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise AdminError(f"not an HTTP response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length is not None and length.isdigit() and len(body) < int(length):
        raise AdminError(f"the admin socket sent {len(body)} of {length} body bytes")
    return int(parts[1]), headers, body


def _status_from(raw: bytes, what: str = "status") -> dict:
    code, _, body = parse_response(raw)
    if code != 200:
        raise AdminError(f"the admin socket answered {code}: {body[:200].decode('utf-8', 'replace').strip()}")
    try:
        status = json.loads(body)
    except ValueError as e:
        raise AdminError(f"the admin socket sent a {what} that is not JSON: {e}") from None
    if not isinstance(status, dict):
        raise AdminError(f"the admin socket sent a {what} that is not a JSON object")
    return status


def request(path: str, target: str, timeout: float | None = 5.0, method: str = "GET") -> bytes:
    """The raw response to `METHOD target` on the admin socket at `path` (blocking)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(_request(target, method))
        chunks, size = [], 0
        while size <= MAX_RESPONSE:
            if deadline is not None:
                s.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)


async def fetch(path: str, target: str) -> bytes:
    """The raw response to `GET target` on the admin socket at `path` (trio)."""
    stream = await trio.open_unix_socket(path)
    async with stream:
        await stream.send_all(_request(target))
        chunks, size = [], 0
        while size <= MAX_RESPONSE:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)


def get_status(path: str, timeout: float | None = 5.0) -> dict:
    """The daemon's status dict from its admin socket (blocking)."""
    return _status_from(request(path, "/status", timeout))


def get_history(path: str, timeout: float | None = 5.0) -> dict:
    """The daemon's history ring (the /history dict) from its admin socket (blocking)."""
    return _status_from(request(path, "/history", timeout), "history")


def reseed(path: str, timeout: float | None = 30.0) -> str:
    """Ask the daemon to reseed now (POST /reseed, blocking); the line it answers.  AdminError if refused."""
    code, _, body = parse_response(request(path, "/reseed", timeout, method="POST"))
    text = body.decode("utf-8", "replace").strip()
    if code != 200:
        raise AdminError(f"the daemon answered {code}: {text[:200]}")
    return text


async def fetch_status(path: str) -> dict:
    """The daemon's status dict from its admin socket (trio; bound it with trio.fail_after)."""
    return _status_from(await fetch(path, "/status"))
