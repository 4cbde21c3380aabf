"""The human summary: what `prngd status` prints and what SIGUSR1 logs, from one function.

`render(status, history)` is the present moment (admin.render_status_text)
followed by the last hour of the history ring: as sparklines (one Unicode block
a column) for a terminal, or as plain numbers (min, mean, max, last) for
anything else: a pipe, a file, the log.
"""

from __future__ import annotations

from prngd.admin import render_status_text

BLOCKS = "▁▂▃▄▅▆▇█"
WINDOW_S = 3600.0  # what the summary draws: the last hour
MAX_COLUMNS = 60  # a sparkline's width at most; more points are averaged into columns


def columns(values: list[float], width: int = MAX_COLUMNS) -> list[float]:
    """`values` in at most `width` columns, each the mean of consecutive values (oldest first)."""
    if len(values) <= width:
        return list(values)
    out = []
    for i in range(width):
        chunk = values[i * len(values) // width:(i + 1) * len(values) // width]
        out.append(sum(chunk) / len(chunk))
    return out


def sparkline(values: list[float]) -> str:
    """One block a value, the lowest block for the series' minimum and the highest for its maximum.

    Scaled to the series' own range, as `spark` does: a dip from 4096 to 3700 bits
    shows, where a scale from 0 would flatten it; the numbers beside give the scale.
    A flat series is drawn mid-height (at the floor when it is all zero).
    """
    if not values:
        return ""
    low, top = min(values), max(values)
    if top == low:
        return (BLOCKS[0] if top == 0 else BLOCKS[len(BLOCKS) // 2 - 1]) * len(values)
    return "".join(BLOCKS[round((v - low) / (top - low) * (len(BLOCKS) - 1))] for v in values)


def _num(v: float) -> str:
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    return f"{v:.0f}" if v == int(v) or abs(v) >= 100 else f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}"


def _series(history: dict) -> tuple[list[dict], dict[str, list[float]]]:
    points = history.get("points") or []
    now = history.get("now") or (points[-1]["t"] if points else 0)
    recent = [p for p in points if p.get("t", 0) > now - WINDOW_S]
    return recent, {
        "entropy": [p.get("entropy_bits", 0) for p in recent],
        "requests/s": [sum((p.get("requests_per_s") or {}).values()) for p in recent],
        "connections": [p.get("connections", 0) for p in recent],
    }


def render_history(history: dict | None, sparklines: bool) -> str:
    """The last hour of `history` (the /history dict), a header line and one line a series."""
    if history is None:
        return ""
    interval = history.get("interval_s")
    every = f"one every {_num(interval)} s" if isinstance(interval, (int, float)) else "interval unknown"
    recent, series = _series(history)
    if not recent:
        return f"last hour:   no points yet ({every})\n"
    out = [f"last hour:   {len(recent)} points, {every}"]
    if sparklines and len(recent) > MAX_COLUMNS:
        out[0] += f", drawn in {MAX_COLUMNS} columns of averages"
    for name, values in series.items():
        unit = " bits" if name == "entropy" else ""
        stats = (f"min {_num(min(values))}, mean {_num(sum(values) / len(values))}, max {_num(max(values))}, "
                 f"last {_num(values[-1])}{unit}")
        if sparklines:
            out.append(f"  {name:<12} {sparkline(columns(values))}  {stats}")
        else:
            out.append(f"  {name:<12} {stats}")
    return "\n".join(out) + "\n"


def render(status: dict, history: dict | None = None, *, sparklines: bool = False) -> str:
    """The whole summary: the status lines, then the last hour when `history` is given."""
    return render_status_text(status) + render_history(history, sparklines)
