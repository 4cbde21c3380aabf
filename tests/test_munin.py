"""examples/munin/prngd against a real daemon: `config` and fetch output parse as Munin reads them."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, connect, egd_read
from prngd import config

PLUGIN = ROOT / "examples" / "munin" / "prngd"
FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")  # Munin's field names (munin's clean_fieldname)
FIELD_ATTRS = {"label", "info", "type", "min", "max", "draw", "warning", "critical", "colour", "cdef", "negative",
               "graph"}
TYPES = {"GAUGE", "COUNTER", "DERIVE", "ABSOLUTE"}
NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?$|U$")


def run_plugin(*args, admin_socket: str, multigraph: bool = True, isolated: bool = False):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "admin_socket": admin_socket}
    if multigraph:
        env["MUNIN_CAP_MULTIGRAPH"] = "1"
    # -I -S: no site-packages, no PYTHONPATH: the plugin must run on the standard library alone.
    cmd = [sys.executable, "-I", "-S", str(PLUGIN), *args] if isolated else [str(PLUGIN), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)


def sections(output: str) -> dict[str, list[str]]:
    """{graph: [lines]} from multigraph output; every line belongs to a `multigraph NAME` section."""
    out: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("multigraph "):
            current = line.split(None, 1)[1]
            assert FIELD.match(current), f"bad graph name {current!r}"
            assert current not in out, f"graph {current} twice"
            out[current] = []
        else:
            assert current is not None, f"line before any multigraph: {line!r}"
            out[current].append(line)
    return out


def parse_config(output: str) -> dict[str, tuple[dict, dict]]:
    """{graph: (graph attributes, {field: {attribute: value}})}, checking every line's shape."""
    graphs = {}
    for graph, lines in sections(output).items():
        attrs: dict[str, str] = {}
        fields: dict[str, dict[str, str]] = {}
        for line in lines:
            key, _, value = line.partition(" ")
            assert value.strip(), f"{graph}: {line!r} has no value"
            if key.startswith("graph_"):
                attrs[key] = value
            else:
                field, dot, attr = key.partition(".")
                assert dot and FIELD.match(field) and field != "root", f"{graph}: bad field in {line!r}"
                assert attr in FIELD_ATTRS, f"{graph}: unknown attribute in {line!r}"
                fields.setdefault(field, {})[attr] = value
        assert attrs.get("graph_title") and attrs.get("graph_vlabel"), f"{graph}: needs graph_title, graph_vlabel"
        for field, fattrs in fields.items():
            assert "label" in fattrs, f"{graph}: {field} has no label"
            assert fattrs.get("type", "GAUGE") in TYPES
            if fattrs.get("type") in ("DERIVE", "COUNTER"):
                assert fattrs.get("min") == "0", f"{graph}: {field} is a counter without min 0"
        if "graph_order" in attrs:
            assert attrs["graph_order"].split() == list(fields), f"{graph}: graph_order is not the fields"
        graphs[graph] = (attrs, fields)
    return graphs


def parse_values(output: str) -> dict[str, dict[str, str]]:
    values = {}
    for graph, lines in sections(output).items():
        values[graph] = {}
        for line in lines:
            m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\.value (\S+)$", line)
            assert m and NUMBER.match(m.group(2)), f"{graph}: {line!r} is not 'NAME.value N'"
            values[graph][m.group(1)] = m.group(2)
    return values


def test_config_and_fetch_parse_as_munin_reads_them(start_daemon):
    d = start_daemon()
    admin_path = config.admin_socket_for(d.socket)
    for _ in range(5):
        egd_read(d.socket, 32)

    assert os.access(PLUGIN, os.X_OK) and PLUGIN.read_text().startswith("#!/usr/bin/env python3\n")
    auto = run_plugin("autoconf", admin_socket=admin_path)
    assert (auto.returncode, auto.stdout) == (0, "yes\n"), auto.stderr

    cfg = run_plugin("config", admin_socket=admin_path)
    assert cfg.returncode == 0 and cfg.stderr == "", cfg.stderr
    graphs = parse_config(cfg.stdout)
    assert set(graphs) == {"prngd_entropy", "prngd_requests", "prngd_connections"}
    assert set(graphs["prngd_requests"][1]) == {"entropy_level", "read_nonblocking", "read_blocking",
                                                "write_entropy", "get_pid"}
    assert all(f["type"] == "DERIVE" for f in graphs["prngd_requests"][1].values())

    with connect(d.socket):  # one connection held open while Munin fetches
        fetched = run_plugin(admin_socket=admin_path, isolated=True)
    assert fetched.returncode == 0 and fetched.stderr == "", fetched.stderr
    values = parse_values(fetched.stdout)
    for graph, (_, fields) in graphs.items():
        assert set(values[graph]) == set(fields), f"{graph}: fetch and config name different fields"
    assert int(values["prngd_entropy"]["entropy"]) > 0
    assert int(values["prngd_connections"]["open"]) == 1
    before = int(values["prngd_requests"]["read_blocking"])
    assert before >= 5

    for _ in range(7):
        egd_read(d.socket, 16)
    again = parse_values(run_plugin(admin_socket=admin_path).stdout)
    assert int(again["prngd_requests"]["read_blocking"]) == before + 7  # a counter Munin can derive


def test_without_a_daemon_autoconf_says_no_and_fetch_fails_in_one_line(tmp_path):
    missing = str(tmp_path / "nobody.admin")
    auto = run_plugin("autoconf", admin_socket=missing)
    assert auto.returncode == 0 and auto.stdout.startswith("no (") and "nobody.admin" in auto.stdout
    for args in ((), ("config",)):
        out = run_plugin(*args, admin_socket=missing)
        assert out.returncode == 1 and out.stdout == ""
        assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr and "nobody.admin" in out.stderr


def test_a_node_without_multigraph_gets_a_clear_refusal(start_daemon):
    d = start_daemon()
    out = run_plugin("config", admin_socket=config.admin_socket_for(d.socket), multigraph=False)
    assert out.returncode == 1 and out.stdout == "" and "multigraph" in out.stderr


def load_plugin():
    loader = importlib.machinery.SourceFileLoader("munin_prngd", str(PLUGIN))
    spec = importlib.util.spec_from_loader("munin_prngd", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_rejections_by_reason_become_valid_fields():
    plugin = load_plugin()
    status = {"entropy_bits": 300, "requests": {"get_pid": 1, "some new/command": 2},
              "connections": {"current": 1, "total": 9, "rejected": 3,
                              "rejected_by_reason": {"global_cap": 1, "per_uid": 2}}}
    graphs = parse_config("\n".join(plugin.config(status)))
    values = parse_values("\n".join(plugin.values(status)))
    assert {"rejected_global_cap", "rejected_per_uid"} <= set(graphs["prngd_connections"][1])
    assert values["prngd_connections"]["rejected_per_uid"] == "2"
    assert values["prngd_requests"] == {"get_pid": "1", "some_new_command": "2"}
    assert values["prngd_entropy"] == {"entropy": "300"}
    assert plugin.clean_fieldname("9lives") == "_lives" and plugin.number(float("nan")) == "U"


@pytest.mark.skipif(shutil.which("munin-run") is None or os.geteuid() != 0,
                    reason="needs munin-node's munin-run, as root (it switches to the configured user)")
def test_munin_run_reads_the_plugin_as_a_node_would(start_daemon, tmp_path):
    """Munin's own runner: plugin-conf.d's `env.admin_socket` reaches the plugin, multigraph is announced."""
    d = start_daemon()
    egd_read(d.socket, 8)
    plugins, conf = tmp_path / "plugins", tmp_path / "plugin-conf.d"
    plugins.mkdir()
    conf.mkdir()
    (plugins / "prngd").symlink_to(PLUGIN)
    (conf / "prngd").write_text(f"[prngd]\nuser root\nenv.admin_socket {config.admin_socket_for(d.socket)}\n")

    def munin_run(*args):
        out = subprocess.run(["munin-run", "--servicedir", str(plugins), "--sconfdir", str(conf), "prngd", *args],
                             capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"]})
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert munin_run("autoconf") == "yes\n"
    graphs = parse_config(munin_run("config"))
    values = parse_values(munin_run())
    assert {g: set(f) for g, (_, f) in graphs.items()} == {g: set(v) for g, v in values.items()}
    assert int(values["prngd_requests"]["read_blocking"]) >= 1
