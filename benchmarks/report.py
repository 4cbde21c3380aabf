"""Presenting a run: the Markdown "Performance" table and the PNG (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path

PRNGD, BASELINE, BASELINE_STREAM, CEILING = "prngd", "baseline_raw", "baseline_stream", "c_epoll"


def _f(v, spec: str = ".0f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


def _ms(us) -> str:
    if us is None:
        return "-"
    ms = us / 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _mb(kb) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f} MB"


def markdown(r: dict) -> str:
    meta, checks = r["meta"], r["checks"]
    by = {(c["transport"], c["scenario"], c["conns"], c["server"]): c for c in r["cells"]}
    lines = [
        "### Performance",
        "",
        f"Measured with `{meta['command'].strip()}` from the repository root "
        f"({meta['date']}, commit {meta.get('commit') or '?'}; {meta['cpus']} x {meta['cpu']}, "
        f"Linux {meta['kernel']}, Python {meta['python']}). Daemon and load generator share the "
        f"{meta['cpus']} cores. Each figure is the median of {meta['reps']} alternated runs of "
        f"{meta['duration_s']:g} s on fresh processes; short replies are summed over all runs. "
        f"Load: {'a C epoll load generator' if meta['load_generator'] == 'c' else 'the pure-Python load generator'}"
        f", one request in flight per connection. Baseline: a minimal trio server on raw non-blocking "
        f"sockets answering from a constant buffer (`benchmarks/baseline_server.py --mode raw`); "
        f"\"x base\" is prngd's rate divided by it.",
        "",
        "| | prngd | baseline (raw trio) | x base | C server | x C |",
        "|---|---|---|---:|---|---:|",
    ]
    st = r["startup"]
    p, b = st.get(PRNGD, {}), st.get(BASELINE, {})
    ps, bs = p.get("exec_to_first_byte_s"), b.get("exec_to_first_byte_s")
    how = f"median of {len(p.get('runs_s', []))} alternated starts" if p.get("alternated") else "median of the starts"
    sr = (r.get("startup_ratio") or {}).get("vs_" + BASELINE, ps / bs if ps and bs else None)
    lines.append(f"| exec to first byte (02 01 over Unix; {how}) | {_f(ps, '.3f')} s | {_f(bs, '.3f')} s "
                 f"| {_f(sr, '.2f')} | | |")
    lines += _one_connection_rows(r, by)
    mp, mb = r["memory"].get(PRNGD, {}), r["memory"].get(BASELINE, {})
    lines.append(f"| RSS after start | {_mb(mp.get('rss_start_kb'))} | {_mb(mb.get('rss_start_kb'))} | | | |")
    lines.append(f"| peak RSS (VmHWM) over the whole run | {_mb(mp.get('peak_rss_kb'))} "
                 f"| {_mb(mb.get('peak_rss_kb'))} | | | |")
    if mp.get("rss_idle_kb"):
        n = mp.get("idle_conns_open")
        lines.append(f"| RSS with {n} idle connections | {_mb(mp.get('rss_idle_kb'))} "
                     f"| {_mb(mb.get('rss_idle_kb'))} | | | |")
        lines.append(f"| CPU while those connections idle | {_f(mp.get('cpu_idle_s_per_s', 0) * 100, '.1f')} % "
                     f"| {_f((mb.get('cpu_idle_s_per_s') or 0) * 100, '.1f')} % | | | |")
    lines.append(f"| `os.urandom(255)` calls/s (one thread) | {_f(r.get('urandom_255_per_s'))} | | | | |")
    hk = tuple(meta["headline_cell"].values())
    hs = by.get((*hk, BASELINE_STREAM))
    if hs and by.get((*hk, PRNGD)):
        lines.append(f"| {hk[1]} x {hk[2]} {hk[0]}: SocketStream trio baseline | | {_f(hs['rps'])} req/s "
                     f"| prngd = {by[(*hk, PRNGD)]['rps'] / hs['rps']:.2f} x | | |")
    ceil = [c for c in r["cells"] if c["server"] == CEILING and c["conns"] != 1]
    if ceil:
        best = {}
        for c in ceil:
            best.setdefault(c["transport"], []).append(f"{c['scenario']} {c['rps'] / 1000:.0f}k")
        txt = "; ".join(f"{t}: " + ", ".join(v) for t, v in best.items())
        lines.append(f"| C epoll server (reference and load generator ceiling, x{ceil[0]['conns']}) | | | "
                     f"| {txt} req/s | |")
    lines += [
        "",
        "| transport | scenario | conns | prngd req/s | baseline req/s | x base | C req/s | x C | prngd MB/s "
        "| prngd p50 / p99 / p99.9 ms | baseline p99 ms | prngd CPU us / reply | short / zero |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    cells = sorted({(c["transport"], c["scenario"], c["conns"]) for c in r["cells"] if c["server"] == PRNGD},
                   key=lambda k: (meta["transports"].index(k[0]), list(meta["scenarios"]).index(k[1]), k[2]))
    like = meta.get("like", {})
    for key in cells:
        ref = (key[0], like.get(key[1], key[1]), key[2])  # a `,pr` row: the others' plain cells
        c, bc, cc = by[(*key, PRNGD)], by.get((*ref, BASELINE)), by.get((*ref, CEILING))
        ratio = c["rps"] / bc["rps"] if bc and bc["rps"] else None
        c_ratio = c["rps"] / cc["rps"] if cc and cc["rps"] else None
        cpu_us = c["server_cpu_s_per_1k"] * 1000 if c.get("server_cpu_s_per_1k") is not None else None
        req = meta["requests"][key[1]]
        scen = f"{key[1]} `{req[:2]} {req[2:]}`".replace(" `00 `", " `00`")
        if meta["modes"][key[1]] == "newconn":
            scen += " new conn"
        if key[1] in like:
            scen += " `,pr` socket"
        lines.append(
            f"| {key[0]} | {scen} | {key[2]} | {_f(c['rps'])} | {_f(bc['rps'] if bc else None)} "
            f"| {_f(ratio, '.2f')} | {_f(cc['rps'] if cc else None)} | {_f(c_ratio, '.2f')} | {_f(c['mbps'], '.1f')} "
            f"| {_ms(c['p50_us'])} / {_ms(c['p99_us'])} / {_ms(c['p999_us'])} "
            f"| {_ms(bc['p99_us'] if bc else None)} "
            f"| {_f(cpu_us, '.1f')} | {c['short']} / {c['zero']} |")
    for name, why in meta.get("skipped_scenarios", {}).items():
        lines += ["", f"Skipped: {name}: {why}."]
    lines += ["", "Checks: " + ", ".join(_check_text(checks)), ""]
    return "\n".join(lines)


def _one_connection_rows(r: dict, by: dict) -> list[str]:
    """One client: 02 ff on one persistent connection (and on a `,pr` socket), and each new-connection
    scenario with one client, against the raw trio baseline and the C server of the same run."""
    meta = r["meta"]
    like = meta.get("like", {})
    rows = []
    for transport in meta["transports"]:
        for scen in meta["scenarios"]:
            newconn = meta["modes"][scen] == "newconn"
            if not (scen == "block255" or newconn or scen in like):
                continue
            c = by.get((transport, scen, 1, PRNGD))
            if c is None:
                continue
            ref = like.get(scen, scen)
            bc, cc = by.get((transport, ref, 1, BASELINE)), by.get((transport, ref, 1, CEILING))
            req = meta["requests"][scen]
            what = (f"1 client, `{req[:2]} {req[2:]}` on a new connection per request" if newconn else
                    f"1 connection, `{req[:2]} {req[2:]}` persistent" + (" on a `,pr` socket" if scen in like else ""))
            ratio = lambda o: c["rps"] / o["rps"] if o and o["rps"] else None  # noqa: E731
            rows.append(f"| {transport}, {what} | {_f(c['rps'])} req/s | {_f(bc['rps'] if bc else None)} req/s "
                        f"| {_f(ratio(bc), '.2f')} | {_f(cc['rps'] if cc else None)} req/s | {_f(ratio(cc), '.2f')} |")
    return rows


def _check_text(ch: dict) -> list[str]:
    out = [f"short or zero replies from prngd: {ch.get('prngd_short_replies', '?')} / {ch.get('prngd_zero_replies', '?')}"]
    if "headline_ratio" in ch:
        out.append(f"02 ff x 50 Unix: {ch['headline_ratio']:.2f} x baseline (>= 0.8: "
                   f"{'yes' if ch['headline_ratio_ok'] else 'NO'}), p99 {ch['headline_p99_ms']:.2f} ms")
    for name, target in (("block255", 0.45), ("openssh", 0.5)):
        v = ch.get(f"unix_{name}_50_vs_c")
        if v is not None:
            out.append(f"unix {name} x 50: {v:.2f} x the C server (>= {target}: {'yes' if v >= target else 'NO'})")
    if ch.get("cpu_us_per_reply_block255_50") is not None:
        v = ch["cpu_us_per_reply_block255_50"]
        out.append(f"CPU per reply under 02 ff x 50 Unix {v:.1f} us (<= 8: {'yes' if v <= 8 else 'NO'})")
    if "p99_at_50_over_2ms" in ch:
        over = ch["p99_at_50_over_2ms"]
        out.append("p99 at 50 connections under 2 ms: " + ("all scenarios" if not over else "not in " + ", ".join(over)))
    if "p99_at_50_over_5ms" in ch:
        over = ch["p99_at_50_over_5ms"]
        out.append("p99 at 50 connections under 5 ms: " + ("all scenarios" if not over else "not in " + ", ".join(over)))
    if "exec_to_first_byte_s" in ch:
        out.append(f"exec to first byte {ch['exec_to_first_byte_s']:.3f} s")
    if "exec_to_first_byte_vs_base" in ch:
        v = ch["exec_to_first_byte_vs_base"]
        out.append(f"exec to first byte {v:.2f} x baseline (<= 1.2: {'yes' if v <= 1.2 else 'NO'})")
    if "unix_block255_1_vs_base" in ch:
        v = ch["unix_block255_1_vs_base"]
        out.append(f"02 ff on 1 Unix connection: {v:.2f} x baseline (>= 1.0: {'yes' if v >= 1.0 else 'NO'})")
    if "rss_idle_mb" in ch:
        out.append(f"RSS with idle connections {ch['rss_idle_mb']:.1f} MB")
    if ch.get("max_other_cpu") is not None:
        dis = ch.get("disturbed_cells") or []
        out.append(f"other processes kept at most {ch['max_other_cpu']:.2f} cores busy during a kept measurement"
                   + (f" (cells above the threshold: {', '.join(dis)})" if dis else ""))
    return out


def plot(r: dict, path: Path) -> str:
    """Requests/s and p99 against concurrency; returns what was done (for the log)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "PNG skipped: matplotlib is not installed (pip install matplotlib, or the 'bench' extra)"
    meta = r["meta"]
    transports = meta["transports"]
    scen = list(meta["scenarios"])
    fig, axes = plt.subplots(len(transports), 2, figsize=(13, 4.6 * len(transports)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    by = {(c["transport"], c["scenario"], c["conns"], c["server"]): c for c in r["cells"]}
    for row, transport in enumerate(transports):
        ax_rps, ax_p99 = axes[row]
        for i, s in enumerate(scen):
            for server, style in ((PRNGD, "-o"), (BASELINE, "--x")):
                pts = sorted((k[2], c) for k, c in by.items() if k[0] == transport and k[1] == s and k[3] == server)
                if not pts:
                    continue
                xs = [x for x, _ in pts]
                label = f"{s} {'prngd' if server == PRNGD else 'baseline'}"
                ax_rps.plot(xs, [c["rps"] for _, c in pts], style, color=colors[i % len(colors)], label=label)
                ax_p99.plot(xs, [c["p99_us"] / 1000 for _, c in pts], style, color=colors[i % len(colors)], label=label)
        for ax, title, ylabel in ((ax_rps, "requests/s", "requests/s"), (ax_p99, "p99 latency", "ms")):
            ax.set_xscale("log")
            ax.set_xticks(meta["concurrency"])
            ax.set_xticklabels([str(c) for c in meta["concurrency"]])
            ax.set_xlabel("concurrent connections")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{title}, {transport} (solid: prngd, dashed: raw trio baseline)")
            ax.grid(True, alpha=0.3)
        ax_p99.set_yscale("log")
        ax_rps.legend(fontsize=7, ncol=2)
    fig.suptitle(f"prngd benchmark, {meta['date']}, {meta['cpus']} cores, median of {meta['reps']} x {meta['duration_s']:g} s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"wrote {path}"
