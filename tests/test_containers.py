"""Containers for real: the example client in a bubblewrap container, and the Kubernetes DaemonSet.

The container has fresh user, pid, net and ipc namespaces, an empty /tmp,
the interpreter's directories read-only, the client's source read-only, and
of the host's /tmp only the daemon's socket directory, bound (read-only) at
/run/prngd as examples/containers/ does it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, Daemon, egd_read, free_tcp_port
from prngd import cli, config, identity, tools
from test_examples import EXAMPLES, check_client_output

BWRAP = shutil.which("bwrap")
NAMESPACES = ("user", "pid", "net", "ipc")
SOCKET_DIR = "/run/prngd"  # where the container sees the host's socket directory
SOCKET = SOCKET_DIR + "/egd-pool"


def _user_namespaces_missing() -> str | None:
    """Why no container can be made here (None: bwrap and user namespaces work)."""
    if BWRAP is None:
        return "bwrap is not installed (Debian: bubblewrap; .ci/run installs it)"
    out = subprocess.run([BWRAP, "--unshare-user", "--ro-bind", "/", "/", "true"], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        return f"user namespaces are unavailable here (bwrap --unshare-user: {out.stderr.strip()})"
    return None


@pytest.fixture(scope="module")
def bwrap():
    reason = _user_namespaces_missing()
    if reason:
        pytest.skip(reason)
    return BWRAP


def _interpreter_dirs() -> list[str]:
    """The directories this python3 runs from, outside /usr: a pyenv or /opt install, a venv and its base."""
    exe = os.path.realpath(sys.executable)
    dirs = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(exe)))}
    dirs = {d for d in dirs if not Path(d).is_relative_to("/usr")}
    return sorted(d for d in dirs if not any(d != o and Path(d).is_relative_to(o) for o in dirs))


def isolated(bwrap: str, *mounts: str) -> list[str]:
    """bwrap's argv up to `--`: fresh namespaces, what the interpreter needs read-only, prngd at /src, `mounts`."""
    argv = [bwrap, *(f"--unshare-{ns}" for ns in NAMESPACES), "--die-with-parent",
            "--clearenv", "--setenv", "PYTHONPATH", "/src", "--setenv", "PYTHONUNBUFFERED", "1",
            "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # merged /usr: symlinks
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for d in _interpreter_dirs():
        argv += ["--ro-bind", d, d]
    return argv + ["--ro-bind", str(ROOT / "prngd"), "/src/prngd", "--ro-bind", str(EXAMPLES), "/src/examples",
                   "--proc", "/proc", *mounts, "--"]


def container(bwrap: str, socket_dir: Path, *extra: str) -> list[str]:
    """A client's container, up to the script: the socket directory read-only at /run/prngd, an empty /tmp."""
    return [*isolated(bwrap, "--ro-bind", str(socket_dir), SOCKET_DIR, "--tmpfs", "/tmp", *extra),
            sys.executable, "-s"]


PROBE = r"""
import json, os, socket, sys
tcp = socket.socket()
tcp.settimeout(5)
try:
    tcp.connect(("127.0.0.1", int(sys.argv[2])))
    tcp_result = "connected"
except OSError as e:
    tcp_result = e.strerror
print(json.dumps({
    "ns": {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("user", "pid", "net", "ipc")},
    "pid": os.getpid(),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "tmp": os.listdir("/tmp"),
    "socket_dir": sorted(os.listdir("/run/prngd")),
    "host_dir_visible": os.path.exists(sys.argv[1]),
    "tcp": tcp_result,
}))
"""


def test_example_client_in_a_container(bwrap, start_daemon, tmp_path):
    socket_dir = tmp_path / "run"
    socket_dir.mkdir()
    (tmp_path / "secret-beside-the-socket-dir").write_text("the container must not see this\n")
    port = free_tcp_port()
    d = start_daemon(socket=str(socket_dir / "egd-pool"), extra_sockets=[f"127.0.0.1:{port}"])

    run = subprocess.run([*container(bwrap, socket_dir), "/src/examples/python_client.py", SOCKET],
                         capture_output=True, text=True, timeout=60)
    check_client_output(run)

    probe = subprocess.run([*container(bwrap, socket_dir), "-c", PROBE, str(tmp_path), str(port)],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    for ns in NAMESPACES:
        assert seen["ns"][ns] != os.readlink(f"/proc/self/ns/{ns}"), f"the container shares the host's {ns} namespace"
    # Its own pid namespace: bwrap's init and the client, not the daemon nor anything else of the host.
    assert seen["pids"] == [1, 2] and seen["pid"] == 2, seen["pids"]
    # Of the host's /tmp it sees the socket directory alone, as /run/prngd; its own /tmp is empty.
    assert seen["tmp"] == []
    assert seen["socket_dir"] == sorted(os.listdir(socket_dir)) and "egd-pool" in seen["socket_dir"]
    assert not seen["host_dir_visible"]
    # Its own network: the daemon's loopback TCP port, which answers on the host, is not there.
    assert len(egd_read(f"127.0.0.1:{port}", 8)) == 8
    assert seen["tcp"] != "connected"
    assert d.proc.poll() is None


# One long-running client: a line on stdin names a socket; it answers with the
# server's pid (0x04) and 32 bytes (0x02) from a new connection, or the error.
CLIENT_LOOP = r"""
import sys
from prngd.client import EGDClient, EGDError
for line in sys.stdin:
    try:
        with EGDClient(line.strip(), timeout=10) as egd:
            print(egd.pid(), egd.read(32).hex(), flush=True)
    except EGDError as e:
        print("error:", e, flush=True)
"""


class Contained:
    """A process in a container, asked one line at a time."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def ask(self, line: str, timeout: float = 30.0) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        try:
            answer = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer to {line!r} in {timeout} s") from None
        assert answer is not None, f"the contained process exited: {self.proc.wait(10)} {self.proc.stderr.read()}"
        return answer

    def close(self) -> int:
        self.proc.stdin.close()
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._reader.join(5)


def served_by(answer: str) -> int:
    pid, data = answer.split()
    assert len(bytes.fromhex(data)) == 32
    return int(pid)


def test_a_directory_mount_outlives_a_daemon_restart(bwrap, start_daemon, tmp_path):
    socket_dir = tmp_path / "run"
    socket_dir.mkdir()
    path = str(socket_dir / "egd-pool")
    first = start_daemon(socket=path)
    # The same process sees the socket twice: in the bound directory, and as a
    # socket file bound on its own (what examples/containers/ says not to do).
    client = Contained([*container(bwrap, socket_dir, "--ro-bind", path, "/run/egd-pool"), "-c", CLIENT_LOOP])
    try:
        assert served_by(client.ask(SOCKET)) == first.pid
        assert served_by(client.ask("/run/egd-pool")) == first.pid

        assert first.stop() == 0
        assert not os.path.exists(path), "the stopped daemon left its socket: " + first.log()
        assert client.ask(SOCKET).startswith("error: ")
        second = start_daemon(socket=path)
        assert second.pid != first.pid

        # The directory shows the new daemon's socket to the process that was already running...
        assert served_by(client.ask(SOCKET)) == second.pid
        # ...a bound socket file still names the old one, which nobody serves.
        assert client.ask("/run/egd-pool").startswith("error: ")
        assert served_by(client.ask(SOCKET)) == second.pid
    finally:
        status = client.close()
    assert status == 0, client.proc.stderr.read()


# ---------------------------------------------------------------- Kubernetes

DAEMONSET = EXAMPLES / "kubernetes" / "prngd-daemonset.yaml"


def daemonset() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    return yaml.safe_load(DAEMONSET.read_text())


def test_daemonset_is_valid_for_every_kubernetes_schema_shipped():
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (the test extra)")
    from kubernetes_validate import utils

    doc = daemonset()
    versions = utils.all_versions()
    assert versions, "kubernetes-validate ships no schemas"
    for version in versions:
        kv.validate(doc, version, strict=True)  # raises ValidationError
    # Strict validation has teeth: a misspelt field is refused.
    wrong = daemonset()
    wrong["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(wrong, kv.latest_version(), strict=True)


def _mounts(container: dict, volumes: dict) -> dict[str, str]:
    """mountPath -> the node's hostPath, for a container."""
    return {m["mountPath"]: volumes[m["name"]]["hostPath"]["path"] for m in container["volumeMounts"]
            if "hostPath" in volumes[m["name"]]}


def test_daemonset_serves_the_node_socket_directory_unprivileged():
    spec = daemonset()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (prngd,) = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    sc = prngd["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "runAsUser" not in sc and "runAsNonRoot" not in sc  # the pod's non-root uid
    assert prngd["resources"]["requests"] and prngd["resources"]["limits"]["memory"]

    # The daemon's command line as prngd reads it: its socket and seed are on the node's disk.
    assert prngd["command"][0] == "prngd"
    settings = cli.load_settings(cli.parser().parse_args(prngd["command"][1:]))
    assert settings.foreground
    mounts = _mounts(prngd, volumes)
    (socket_path,) = settings.resolved_sockets()
    assert mounts[os.path.dirname(socket_path)] == "/run/prngd" == os.path.dirname(socket_path)
    assert os.path.dirname(settings.resolved_seedfile()) in mounts
    assert config.admin_socket_for(socket_path).startswith("/run/prngd/")
    # The node's machine-id, so that the seed is credited at the next start on this node.
    assert mounts["/etc/machine-id"] == "/etc/machine-id"
    assert identity.MACHINE_ID_PATHS[0] == "etc/machine-id"

    # Liveness: `prngd ping` on that socket.
    for probe in ("livenessProbe", "readinessProbe"):
        argv = prngd[probe]["exec"]["command"]
        assert argv[:2] == ["prngd", "ping"], probe
        args = tools.parser().parse_args(argv[1:])
        assert args.socket == socket_path and args.timeout < prngd[probe]["timeoutSeconds"], probe

    # The one root step owns the directories to the pod's uid, with CAP_CHOWN alone.
    (init,) = spec["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    uid, gid = spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]
    assert f"chown {uid}:{gid} " in init["command"][-1]
    for path in _mounts(init, volumes):
        assert path in init["command"][-1] and path in mounts


def test_daemonset_runs_unprivileged_on_a_read_only_root(bwrap, tmp_path):
    # The pod as bubblewrap can make it: the manifest's uid, its mounts (the node's directories
    # here under tmp_path), a read-only root, fresh namespaces; then its command and its probe.
    spec = daemonset()["spec"]["template"]["spec"]
    (prngd,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    node = tmp_path / "node"
    mounts = ["--uid", str(spec["securityContext"]["runAsUser"]), "--gid", str(spec["securityContext"]["runAsGroup"]),
              "--dev", "/dev"]
    for m in prngd["volumeMounts"]:
        if "emptyDir" in volumes[m["name"]]:
            mounts += ["--tmpfs", m["mountPath"]]
            continue
        host = volumes[m["name"]]["hostPath"]
        on_node = node / host["path"].lstrip("/")
        if host["type"] == "File":
            on_node.parent.mkdir(parents=True, exist_ok=True)
            on_node.write_text(os.urandom(16).hex() + "\n")  # a machine-id
        else:
            on_node.mkdir(parents=True)
        mounts += ["--ro-bind" if m.get("readOnly") else "--bind", str(on_node), m["mountPath"]]
    (node / "var/lib/prngd").chmod(0o700)  # as the init container leaves it
    mounts += ["--remount-ro", "/"]
    wrapper = tuple(isolated(bwrap, *mounts))
    socket_path = str(node / "run/prngd/egd-pool")

    def start() -> Daemon:
        assert prngd["command"][0] == "prngd"
        return Daemon(prngd["command"][1:], socket_path, wrapper=wrapper).wait_ready()

    def stop(d: Daemon) -> int:
        # bwrap does not pass SIGTERM on: the daemon itself gets it, as from the kubelet.
        (inner,) = [p for p in psutil.Process(d.pid).children(recursive=True)
                    if p.cmdline()[:3] == [sys.executable, "-m", "prngd"]]
        inner.send_signal(signal.SIGTERM)
        d.proc.wait(30)  # bwrap ends with its child, with its status
        return d.stop()

    first = start()
    try:
        first.wait_for_line("not loaded: no seed file yet")
        probe = prngd["livenessProbe"]["exec"]["command"]
        run = subprocess.run([*wrapper, sys.executable, "-m", "prngd", *probe[1:]], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stderr
        assert re.fullmatch(r"/run/prngd/egd-pool: pid \d+, [\d.]+ ms\n", run.stdout), run.stdout
        write = subprocess.run([*wrapper, sys.executable, "-c", "open('/written', 'w')"], capture_output=True,
                               text=True, timeout=60)
        assert write.returncode != 0 and "Read-only file system" in write.stderr
    finally:
        assert stop(first) == 0, first.log()
    seed = node / "var/lib/prngd/seed"
    assert seed.stat().st_size == 588 and seed.stat().st_mode & 0o777 == 0o600

    # On the next start on this node the seed is credited: the node's machine-id says it is the same machine.
    second = start()
    try:
        second.wait_for_line("seed file /var/lib/prngd/seed: loaded 588 bytes, credited 256 bits")
    finally:
        assert stop(second) == 0, second.log()


def test_a_uid_without_home_or_passwd_entry_gets_the_system_seed_path(monkeypatch):
    # A container's arbitrary uid: no $HOME, no passwd entry.  The command line is still
    # parsed (its help names the default seed file) and the default is the system's.
    import pwd

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for var in ("HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 10001)
    monkeypatch.setattr(os, "getuid", lambda: 10001)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    assert config.default_seedfile() == "/var/lib/prngd/seed"
    assert cli.parser().parse_args(["-f", "/run/prngd/egd-pool"]).fg


def test_doctor_in_a_container_sees_the_host_daemon_and_what_it_cannot_tell(bwrap, start_daemon, tmp_path):
    socket_dir = tmp_path / "run"
    socket_dir.mkdir()
    d = start_daemon(socket=str(socket_dir / "egd-pool"))
    # No /sys, no /etc, a uid with no passwd entry, a read-only root.
    argv = [*isolated(bwrap, "--uid", "10001", "--ro-bind", str(socket_dir), SOCKET_DIR, "--tmpfs", "/tmp",
                      "--remount-ro", "/"), sys.executable, "-m", "prngd", "doctor"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    lines = out.stdout.splitlines()
    assert f"EGD socket {SOCKET}: served by pid {d.pid} by its own word, from another pid namespace " \
           f"(uid 10001 here): a daemon outside this container" in lines, out.stdout
    assert "hardware RNG: cannot tell: /sys is not mounted here" in lines
    assert lines[-1].startswith("verdict: this machine ") and f"{SOCKET} (pid {d.pid})" in lines[-1]
