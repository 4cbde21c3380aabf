"""The examples under examples/: run what can run here, check the rest against prngd's own parsers."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, free_tcp_port
from prngd import cli, config, egd, tools

EXAMPLES = ROOT / "examples"
UNITS = EXAMPLES / "systemd"
# Where the README's "Install as a service" links the venv's entry point.
INSTALLED = "/usr/local/sbin/prngd"


def env_with(*paths) -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, paths), str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")]))


# ---------------------------------------------------------------- Python client

def run_python_client(address: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / "python_client.py"), address], capture_output=True,
                          text=True, env=env or env_with(), timeout=30)


def check_client_output(out: subprocess.CompletedProcess) -> None:
    assert out.returncode == 0, out.stderr
    hex_line, level_line = out.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f]{64}", hex_line)
    m = re.fullmatch(r"entropy level: (\d+) bits", level_line)
    assert m and int(m.group(1)) > 0


def test_python_client_against_a_real_daemon(start_daemon):
    port = free_tcp_port()
    d = start_daemon(extra_sockets=[f"127.0.0.1:{port}"])
    check_client_output(run_python_client(d.socket))
    check_client_output(run_python_client(f"127.0.0.1:{port}"))


def test_python_client_needs_no_trio(start_daemon, tmp_path):
    # As in a python:3.11-slim container with only the source tree mounted.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "trio.py").write_text("raise ImportError('trio is not installed in this container')\n")
    d = start_daemon()
    check_client_output(run_python_client(d.socket, env_with(shadow)))


def test_python_client_errors(tmp_path):
    out = run_python_client(str(tmp_path / "missing"))
    assert out.returncode == 1 and "no such socket" in out.stderr
    usage = subprocess.run([sys.executable, str(EXAMPLES / "python_client.py")], capture_output=True, text=True,
                           env=env_with(), timeout=30)
    assert usage.returncode == 2 and "usage" in usage.stderr


# ---------------------------------------------------------------- OpenSSL C example

def test_openssl_c_example(start_daemon, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    binary = tmp_path / "egd_rand"
    build = subprocess.run([cc, "-o", str(binary), str(EXAMPLES / "openssl" / "egd_rand.c"), "-lcrypto"],
                           capture_output=True, text=True, timeout=120)
    if build.returncode != 0:
        if "OPENSSL_NO_EGD" in build.stderr:
            pytest.skip("the installed OpenSSL is built no-egd (OPENSSL_NO_EGD): RAND_egd() does not exist; "
                        "the example needs an OpenSSL built with enable-egd")
        if "openssl/rand.h" in build.stderr or "cannot find -lcrypto" in build.stderr:
            pytest.skip(f"OpenSSL development files are missing: {build.stderr.strip().splitlines()[0]}")
        pytest.fail(f"egd_rand.c does not build:\n{build.stderr}")
    d = start_daemon()
    run = subprocess.run([str(binary), d.socket], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f]{64}", lines[0])
    assert lines[1].startswith("RAND_egd: 255 bytes")


# ---------------------------------------------------------------- systemd units

def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",), comment_prefixes=("#", ";"))
    cp.optionxform = str
    cp.read(UNITS / name)
    return cp


def all_values(name: str, key: str) -> list[str]:
    """Every assignment of a key that systemd lets accumulate (configparser keeps only the last)."""
    return [line.partition("=")[2].strip() for line in (UNITS / name).read_text().splitlines()
            if line.partition("=")[0].strip() == key]


def exec_argv(name: str, key: str = "ExecStart") -> list[str]:
    return shlex.split(unit(name)["Service"][key])


def test_service_unit_essentials():
    svc = unit("prngd.service")["Service"]
    assert svc["Type"] == "notify"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["StateDirectory"] == "prngd" and svc["ProtectSystem"] == "strict"
    # Never root: a dynamic user, with no capabilities to hold.
    assert svc["DynamicUser"] == "yes" and "User" not in svc
    assert svc["CapabilityBoundingSet"] == "" and svc["AmbientCapabilities"] == ""
    # PrivateUsers= would show root's 0x03 writes as nobody's: no longer credited.
    assert svc.get("PrivateUsers", "no") == "no"
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges", "PrivateDevices"):
        assert svc[key] == "yes", key
    assert svc["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert all_values("prngd.service", "SystemCallFilter") == ["@system-service", "~@privileged"]
    sock = unit("prngd.socket")["Socket"]
    assert sock["ListenStream"] == "/run/egd-pool" and sock["SocketMode"] == "0666"
    for name in ("prngd.service", "prngd.socket", "prngd-feed-kernel.service"):
        assert "man:prngd(8)" in unit(name)["Unit"]["Documentation"].split(), name


def test_feed_kernel_unit_holds_cap_sys_admin_alone():
    svc = unit("prngd-feed-kernel.service")["Service"]
    assert svc["DynamicUser"] == "yes"
    assert svc["CapabilityBoundingSet"] == "CAP_SYS_ADMIN" == svc["AmbientCapabilities"]


def test_exec_lines_are_valid_prngd_command_lines():
    argv = exec_argv("prngd.service")
    assert argv[0] == INSTALLED
    args = cli.parser().parse_args(argv[1:])
    assert args.fg, "Type=notify wants the daemon in the foreground"
    settings = cli.load_settings(args)
    assert settings.resolved_sockets() == ["/run/prngd/egd-pool"]
    assert settings.resolved_seedfile() == "/var/lib/prngd/seed"
    assert unit("prngd.service")["Service"]["RuntimeDirectory"] == "prngd"

    feed = exec_argv("prngd-feed-kernel.service")
    assert feed[:2] == [INSTALLED, "feed-kernel"]
    parser = tools.parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and a.choices and "feed-kernel" in a.choices)
    fk = sub.choices["feed-kernel"].parse_intermixed_args(feed[2:])
    assert fk.socket == "/run/egd-pool" and fk.interval == 60


def test_tmpfiles_links_match_the_service():
    links = {}
    for line in (UNITS / "tmpfiles-prngd.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, path, *_, target = line.split()
            assert kind == "L"
            links[path] = target
    served = "/run/prngd/egd-pool"
    assert links == {"/run/egd-pool": served, "/run/egd-pool.admin": config.admin_socket_for(served)}
    # where `prngd status /run/egd-pool` looks (and root's default, /var/run/egd-pool.admin)
    assert config.admin_socket_for("/run/egd-pool") in links


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path):
    # prngd is not installed at INSTALLED here: verify a copy that runs an executable that exists.
    # The man pages of Documentation= are looked up in the repository's docs/man.
    stand_in = shutil.which("true")
    names = ["prngd.service", "prngd.socket", "prngd-feed-kernel.service"]
    for name in names:
        (tmp_path / name).write_text((UNITS / name).read_text().replace(INSTALLED, stand_in))
    man = ["--man=yes"] if shutil.which("man") else ["--man=no"]
    out = subprocess.run(["systemd-analyze", "verify", *man, *names], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, MANPATH=str(ROOT / "docs" / "man")))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (out.stdout + out.stderr).strip() == "", "systemd-analyze has remarks:\n" + out.stdout + out.stderr


def security_exposure(unit_path) -> float:
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit_path)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout + out.stderr)
    assert m, out.stdout + out.stderr
    return float(m.group(1))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_service_exposure_is_at_most_1_5(tmp_path):
    path = tmp_path / "prngd.service"
    path.write_text((UNITS / "prngd.service").read_text().replace(INSTALLED, shutil.which("true")))
    try:
        exposure = security_exposure(path)
    except AssertionError:
        pytest.skip("this systemd-analyze has no offline security analysis")
    assert exposure <= 1.5


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_drop_ins_verify_and_the_hwrng_one_shows_only_hwrng(tmp_path):
    """Issue 19: PrivateDevices=yes hides /dev/hwrng; prngd-hwrng.conf opens that one device, read-only."""
    (tmp_path / "prngd.service").write_text((UNITS / "prngd.service").read_text().replace(INSTALLED, shutil.which("true")))
    assert "prngd-hwrng.conf" in (UNITS / "prngd.service").read_text()
    hwrng = UNITS / "prngd-hwrng.conf"
    assert drop_in_values(hwrng, "DeviceAllow") == ["/dev/hwrng r"]
    assert drop_in_values(hwrng, "DevicePolicy") == ["closed"] and drop_in_values(hwrng, "PrivateDevices") == ["no"]
    drop_ins = tmp_path / "prngd.service.d"
    drop_ins.mkdir()
    shutil.copy(hwrng, drop_ins / "hwrng.conf")
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{tmp_path}:")
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", "prngd.service"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0 and (out.stdout + out.stderr).strip() == "", out.stdout + out.stderr
    sec = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", "prngd.service"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", sec.stdout + sec.stderr)
    if m is None:
        pytest.skip("this systemd-analyze has no offline security analysis")
    assert "/dev/hwrng:r" in sec.stdout, "the drop-in was not read"
    # PrivateDevices=no, the device ACL and the group cost 0.2 over the unit's 1.4.
    assert float(m.group(1)) <= 1.6


# ---------------------------------------------------------------- Postfix

def main_cf() -> dict:
    values = {}
    for line in (EXAMPLES / "postfix" / "main.cf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_postfix_and_prngd_share_socket_and_exchange_file():
    pf = main_cf()
    settings = config.load(str(EXAMPLES / "postfix" / "prngd.conf"))
    source = pf["tls_random_source"]
    assert source.startswith("egd:")
    assert egd.parse_address(source) == egd.parse_address(settings.resolved_sockets()[0])
    exchange = pf["tls_random_exchange_name"].replace("${data_directory}", "/var/lib/postfix")
    assert settings.exchange_file == exchange


def drop_in_values(path, key: str) -> list[str]:
    return [line.partition("=")[2].strip() for line in path.read_text().splitlines()
            if line.partition("=")[0].strip() == key]


def postfix_exec_argv() -> list[str]:
    """The drop-in's command line: an empty ExecStart= clears the unit's, then its own."""
    starts = drop_in_values(EXAMPLES / "postfix" / "prngd-postfix.conf", "ExecStart")
    assert len(starts) == 2 and starts[0] == "", "a drop-in must clear ExecStart= before setting its own"
    return shlex.split(starts[1])


def test_postfix_drop_in_reads_the_config_and_runs_as_postfix():
    """Issue 19: the override had no -c, so the [exchange] of /etc/prngd.conf was never read."""
    svc = EXAMPLES / "postfix" / "prngd-postfix.conf"
    assert drop_in_values(svc, "User") == ["postfix"] and drop_in_values(svc, "DynamicUser") == ["no"]
    pf = main_cf()
    exchange = pf["tls_random_exchange_name"].replace("${data_directory}", "/var/lib/postfix")
    assert drop_in_values(svc, "ReadWritePaths") == [exchange]
    argv = postfix_exec_argv()
    assert argv[0] == INSTALLED
    args = cli.parser().parse_args(argv[1:])
    assert args.cmdfile == "/etc/prngd.conf" and "/etc/prngd.conf" in (EXAMPLES / "postfix" / "README.md").read_text()
    # The unit's own settings stay (foreground, seed, socket); the file is postfix/prngd.conf.
    base = cli.parser().parse_args(exec_argv("prngd.service")[1:])
    assert (args.fg, args.seedfile, args.sockets) == (base.fg, base.seedfile, base.sockets)
    args.cmdfile = str(EXAMPLES / "postfix" / "prngd.conf")
    settings = cli.load_settings(args)
    assert settings.exchange_file == exchange
    assert settings.resolved_sockets() == ["/run/prngd/egd-pool"]  # /var/run/egd-pool links there (tmpfiles)


def test_postfix_drop_in_command_line_runs_with_the_exchange_file(tmp_path):
    """The drop-in's own command line, paths moved into tmp_path, on a real daemon: the exchange file is used."""
    import json

    from conftest import Daemon

    conf = (EXAMPLES / "postfix" / "prngd.conf").read_text()
    exch = tmp_path / "prng_exch"
    (tmp_path / "prngd.conf").write_text(conf.replace("/var/lib/postfix/prng_exch", str(exch))
                                         + "[sources]\nsystem = no\njitter = no\nexternal_commands = no\n")
    moved = {"/etc/prngd.conf": str(tmp_path / "prngd.conf"), "/var/lib/prngd/seed": str(tmp_path / "seed"),
             "/run/prngd/egd-pool": str(tmp_path / "egd-pool")}
    argv = [moved.get(a, a) for a in postfix_exec_argv()[1:]]
    assert not [a for a in argv if a.startswith(("/etc", "/var", "/run"))], argv
    d = Daemon(argv, str(tmp_path / "egd-pool")).wait_ready()
    try:
        status = subprocess.run([sys.executable, "-m", "prngd", "status", "--json", d.socket], capture_output=True,
                                text=True, timeout=30, env=env_with(), check=True).stdout
        assert json.loads(status)["exchange"]["path"] == str(exch)
    finally:
        assert d.stop() == 0
    assert exch.stat().st_size == 1024  # written at stop


# ---------------------------------------------------------------- containers

def test_compose_file_shares_the_socket_directory():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed; compose.yaml left unparsed")
    compose = yaml.safe_load((EXAMPLES / "containers" / "compose.yaml").read_text())
    served_dir = os.path.dirname(cli.load_settings(cli.parser().parse_args(exec_argv("prngd.service")[1:]))
                                 .resolved_sockets()[0])
    for name, svc in compose["services"].items():
        mounts = {v["source"]: v for v in svc["volumes"]}
        assert served_dir in mounts, f"{name} must mount {served_dir}"
        assert mounts[served_dir]["target"] == served_dir and mounts[served_dir]["read_only"] is True
    client_cmd = compose["services"]["egd-client"]["command"]
    assert client_cmd[1] == "/src/examples/python_client.py" and (EXAMPLES / "python_client.py").exists()
    assert client_cmd[2] == served_dir + "/egd-pool"


# ---------------------------------------------------------------- README's service installation

def readme_block(after: str) -> list[str]:
    """The indented command block that follows `after` in the README."""
    text = (ROOT / "README.md").read_text()
    block = text.split(after, 1)[1].lstrip("\n").split("\n\n", 1)[0]
    assert all(line.startswith("    ") for line in block.splitlines()), block
    return [line[4:] for line in block.splitlines()]


def test_readme_install_steps_create_what_the_units_run():
    steps = readme_block("source tree (this directory):")
    argvs = [shlex.split(step) for step in steps]
    # The entry point is linked to the path ExecStart names.
    assert ["ln", "-sf", "/opt/prngd/bin/prngd", INSTALLED] in argvs
    assert exec_argv("prngd.service")[0] == INSTALLED == exec_argv("prngd-feed-kernel.service")[0]
    # Every unit, the tmpfiles file and both man pages are installed from files that exist.
    installed = [arg for argv in argvs if argv[0] == "install" for arg in argv if "/" in arg]
    for name in ("prngd.service", "prngd.socket", "prngd-feed-kernel.service", "tmpfiles-prngd.conf"):
        assert f"examples/systemd/{name}" in installed and (UNITS / name).is_file(), name
    # The man pages come from where setup.cfg's data_files put them under the venv's prefix.
    cp = configparser.ConfigParser()
    cp.read(ROOT / "setup.cfg")
    for target, files in cp["options.data_files"].items():
        if target.startswith("share/man/"):
            for f in files.split():
                assert f"/opt/prngd/{target}/{os.path.basename(f)}" in installed, f
    assert any(argv[:2] == ["systemd-analyze", "verify"] for argv in argvs)


def test_readme_set_up_keeps_two_commands():
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up\n", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in setup.splitlines() if line.startswith("    ")]
    assert len(commands) == 2, commands
    assert text.index("## Check that it works") == text.index("\n## ", text.index("## Set-up") + 1) + 1


def test_ci_runs_the_readme_test_command():
    """CI (.ci/run, a clean clone as root) runs the README's test command, minus the venv."""
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up\n", 1)[1].split("\n## ", 1)[0]
    daemon, tests = [line[4:] for line in setup.splitlines() if line.startswith("    ")]
    venv = "python3 -m venv .venv && . .venv/bin/activate && "
    assert daemon.startswith(venv) and daemon.endswith("python3 -m prngd -f"), daemon
    assert tests.startswith(venv), tests
    install, run = tests[len(venv):].split(" && ")
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install.replace("pip install", "pip install -q") in ci, install
    assert ci[-1] == run, run
