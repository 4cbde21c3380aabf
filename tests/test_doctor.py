"""`prngd doctor` against a real daemon, a real seed file and probes that fail."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from conftest import ROOT, fork_as_nobody
from prngd import doctor, seedfile
from prngd.identity import machine_identity


def run_doctor(*args: str, user: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "prngd", "doctor", *args], capture_output=True, text=True,
                          env=env, timeout=120, user=user, cwd="/")


def doctor_json(*args: str) -> dict:
    out = run_doctor("--json", *args)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return json.loads(out.stdout)


def no_traceback(out: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr


def test_doctor_sees_the_daemon_serving_a_configured_socket_and_its_seed(start_daemon, tmp_path):
    seed = tmp_path / "seed"
    d = start_daemon(seed=seed)
    conf = tmp_path / "doctor.conf"
    conf.write_text(f"[prngd]\nsockets = {d.socket}\n[seed]\nseedfile = {seed}\n")

    out = run_doctor("-c", str(conf))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    no_traceback(out)
    lines = out.stdout.splitlines()
    served = [line for line in lines if line.startswith(f"EGD socket {d.socket}:")]
    assert served == [f"EGD socket {d.socket}: served by pid {d.pid} (uid {os.geteuid()}): "
                      f"{' '.join(d.proc.args)[:117]}" + ("..." if len(' '.join(d.proc.args)) > 120 else "")]
    assert any(line.startswith(f"seed file {seed}: 588 bytes, written ") for line in lines), out.stdout
    assert lines[-1].startswith("verdict: this machine ")
    # One line each for the kernel, getrandom, the hardware RNG, VM generation and the service.
    for head in ("kernel CRNG: ", "getrandom(): ", "entropy_avail: ", "hardware RNG: ", "VM generation (vmclock): ",
                 "Postfix: ", "OpenSSL: ", "OpenSSH: ", "service: "):
        assert sum(line.startswith(head) for line in lines) == 1, head

    # The same as JSON, the socket given on the command line and the seed with -s.
    report = doctor_json(d.socket, "-s", str(seed))
    facts = report["checks"]["egd_sockets"]["sockets"][d.socket]
    assert facts["serves"] and facts["pid"] == facts["peer_pid"] == d.pid
    assert "prngd" in facts["command"]
    assert report["verdict"]["serving"][d.socket] == d.pid
    s = report["checks"]["seed"]
    written = seedfile.read_seed(str(seed))
    assert s["state"] == "present" and s["bytes"] == 588 and s["version"] == written.version == 2
    assert s["written_seeded"] is written.credit is True
    assert s["mode"] == "0600" and s["owner_uid"] == os.geteuid()
    if machine_identity().fingerprint is not None:
        assert (s["origin"], s["credit_bits"], s["note"]) == ("this machine", 256, None)
        assert "the next start credits 256 bits" in report["checks"]["seed"]["lines"][0]
    else:
        assert s["credit_bits"] == 0 and s["note"]
    # What confines the daemon, from /proc: here it runs as the test's user, with the test's capabilities.
    box = report["checks"]["sandbox"]["processes"][str(d.pid)]
    caps = int(next(line for line in open(f"/proc/{d.pid}/status") if line.startswith("CapEff:")).split()[1], 16)
    assert box["uid"] == os.geteuid() and int(box["capabilities"], 16) == caps
    assert any(line.startswith(f"process: pid {d.pid} (serving {d.socket}) runs as uid {os.geteuid()}, ")
               for line in report["checks"]["sandbox"]["lines"])
    if os.geteuid() == 0 and caps:
        assert any(f.startswith(f"pid {d.pid} serves {d.socket} as root") for f in report["fixes"])
    # The text is the JSON's lines, in order, then the fixes and the verdict.
    text = [line for c in report["checks"].values() for line in c["lines"]]
    assert text[0].startswith("kernel CRNG: ") and text[-1].startswith("service: ")

    # Doctor only looked: the seed is the one the daemon wrote, byte for byte, and the daemon serves on.
    assert seedfile.read_seed(str(seed)) == written
    assert d.proc.poll() is None
    d.stop()
    after = doctor_json(d.socket, "-s", str(seed))
    assert after["checks"]["egd_sockets"]["sockets"][d.socket] == {"exists": False}
    assert d.socket not in after["verdict"]["serving"]


def test_what_is_not_an_egd_server_is_said_in_one_line(tmp_path):
    regular = tmp_path / "file"
    regular.write_text("not a socket\n")
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # the file stays: nobody serves it
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nothing")
    out = run_doctor(str(regular), str(stale), str(dangling), "-s", str(tmp_path / "no-seed"))
    assert out.returncode == 0, out.stderr
    no_traceback(out)
    lines = out.stdout.splitlines()
    assert f"EGD socket {regular}: a regular file, not a socket: EGD clients that look here fail" in lines
    assert any(line.startswith(f"EGD socket {stale}: a socket nobody serves (") for line in lines), out.stdout
    assert f"EGD socket {dangling} (-> {tmp_path / 'nothing'}): a symbolic link to nothing" in lines
    assert f"seed file {tmp_path / 'no-seed'}: absent (none written yet; the first start writes it)" in lines


def test_a_seed_prngd_would_refuse_is_a_line_and_a_fix(tmp_path):
    fifo = tmp_path / "seed"
    os.mkfifo(fifo)
    out = run_doctor("-s", str(fifo))
    assert out.returncode == 0, out.stderr
    no_traceback(out)
    assert f"seed file {fifo}: prngd would refuse to start: it is a FIFO, not a seed file" in out.stdout
    assert f"fix: move what is at {fifo} away, or name another seed file" in out.stdout.splitlines()
    assert fifo.exists() and not fifo.is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to look as another user")
def test_an_unreadable_seed_file_is_a_line_not_a_traceback(start_daemon, open_dir):
    seed = open_dir / "seed"
    d = start_daemon(seed=seed)
    d.stop()
    assert seed.stat().st_mode & 0o777 == 0o600 and seed.stat().st_uid == 0

    def look(w: int) -> int:  # as uid 65534, who may not read root's 0600 seed
        report = doctor.run(doctor.Context(sockets=[], seedfile=str(seed)), checks=(doctor.check_seed,))
        os.write(w, doctor.render(report).encode())
        return 0

    pid, r = fork_as_nobody(look)
    with os.fdopen(r) as f:
        text = f.read()
    assert os.waitpid(pid, 0)[1] == 0, text
    lines = text.splitlines()
    assert lines[0] == (f"seed file {seed}: cannot read it as uid 65534 (Permission denied); it belongs to uid 0: "
                        "run prngd doctor as root or as that user to see it"), text
    assert lines[-1].startswith("verdict: ")


def test_postfix_reading_egd_makes_the_verdict(start_daemon, tmp_path):
    d = start_daemon()
    postfix = tmp_path / "postfix"
    postfix.mkdir()
    (postfix / "main.cf").write_text(f"# main.cf\ntls_random_source = dev:/dev/urandom\n"
                                     f"tls_random_source = egd:{d.socket}\n")
    report = doctor_json("--postfix-config", str(postfix), "-s", str(tmp_path / "seed"))
    assert report["checks"]["egd_clients"]["postfix"]["tls_random_source"] == f"egd:{d.socket}"
    assert report["checks"]["egd_sockets"]["sockets"][d.socket]["pid"] == d.pid
    v = report["verdict"]
    assert v["needs_prngd"] and f"Postfix reads EGD at {d.socket}" in v["because"]
    assert v["line"].startswith(f"this machine needs prngd because Postfix reads EGD at {d.socket}")
    assert f"served now: {d.socket} (pid {d.pid})" in v["line"]
    assert not any("Postfix" in f for f in report["fixes"])

    d.stop()
    report = doctor_json("--postfix-config", str(postfix), "-s", str(tmp_path / "seed"))
    assert f"Postfix reads EGD at {d.socket}, and nothing serves it: run `prngd {d.socket}`" in report["fixes"]
    assert report["verdict"]["line"].endswith("nothing serves EGD here now")


def test_a_check_that_fails_or_hangs_is_a_line(tmp_path):
    def check_broken(ctx, c):
        c.lines.append("broken: first line")
        raise OSError(13, "Permission denied", "/some/file")

    release = threading.Event()

    def check_stuck(ctx, c):
        c.lines.append("stuck: started")
        release.wait(30)

    ctx = doctor.Context(sockets=[], seedfile=None, timeout=0.2)
    try:
        report = doctor.run(ctx, checks=(check_broken, check_stuck, doctor.check_getrandom))
    finally:
        release.set()
    checks = report["checks"]
    assert checks["broken"]["lines"] == ["broken: first line",
                                         "broken: could not check: Permission denied (/some/file)"]
    assert checks["stuck"]["lines"] == ["stuck: started", "stuck: no answer within 1.2 s; the rest not checked"]
    assert checks["getrandom"]["lines"] == ["getrandom(): available"]
    assert doctor.render(report).splitlines()[-1].startswith("verdict: this machine does not need prngd")


def test_doctor_usage_errors_exit_2(tmp_path):
    out = run_doctor("-c", str(tmp_path / "missing.conf"))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("prngd doctor: ") and len(out.stderr.splitlines()) == 1
    out = run_doctor("--timeout", "0")
    assert out.returncode == 2 and "--timeout" in out.stderr
