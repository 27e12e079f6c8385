"""The daemon plumbing (cluster/daemon.py) on real processes: a launch leaves its pid file, `stop` ends the process
(SIGKILL when SIGTERM is ignored) and removes only its own pid file, a later start stops a crashed run's leftover but
spares a pid now used by something else, a taken port is refused and an early exit fails with the log's end; and a
real redis-server left behind by a crashed run is stopped by the next start on its state dir."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cluster import daemon, redis_server
from cluster.daemon import DaemonError
from tests.cluster.observe_helpers import free_port

SLEEP = shutil.which("sleep")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def running(process: subprocess.Popen, executable: str) -> subprocess.Popen:
    """`process` once it runs `executable` (a launch execs setpriv first, then the daemon)."""
    deadline = time.monotonic() + 5
    while Path(psutil.Process(process.pid).exe()) != Path(executable).resolve():
        assert time.monotonic() < deadline, f"{executable} not exec'd"
        time.sleep(0.01)
    return process


@pytest.fixture
def sleeper(tmp_path: Path):
    """`sleep 60` launched as the daemon "sleeper" in `tmp_path`, stopped at the end whatever the test did."""
    process = running(daemon.launch(tmp_path, "sleeper", [SLEEP, "60"]), SLEEP)
    yield process
    daemon.stop(tmp_path, {"sleeper": process}, grace_s=1)


@pytest.fixture
def bystander(tmp_path: Path):
    """Starts a process that is not ours to stop; terminated at the end."""
    started: list[subprocess.Popen] = []

    def run(cmd: list[str], cwd: Path) -> subprocess.Popen:
        started.append(subprocess.Popen(cmd, cwd=cwd))
        return started[-1]

    yield run
    for process in started:
        process.kill()
        process.wait()


def test_a_launched_daemon_has_its_pid_file_until_stop_ends_it(tmp_path: Path, sleeper: subprocess.Popen):
    assert (tmp_path / "sleeper.pid").read_text() == f"{sleeper.pid}\n"
    running = psutil.Process(sleeper.pid)
    assert Path(running.cwd()) == tmp_path.resolve() and running.name() == "sleep"  # setpriv exec'd it, no wrapper left
    assert running.ppid() == os.getpid() and os.getpgid(sleeper.pid) == sleeper.pid  # our child, in its own session
    started = time.monotonic()
    daemon.stop(tmp_path, {"sleeper": sleeper}, grace_s=5)
    assert time.monotonic() - started < 5  # SIGTERM did it (psutil reaped it, so Popen cannot tell the signal)
    assert gone(sleeper.pid) and not (tmp_path / "sleeper.pid").exists()


def test_stop_kills_a_daemon_that_ignores_sigterm(tmp_path: Path):
    deaf = running(daemon.launch(tmp_path, "deaf", ["sh", "-c", f"trap '' TERM; exec {SLEEP} 60"]), SLEEP)  # trap set
    started = time.monotonic()
    daemon.stop(tmp_path, {"deaf": deaf}, grace_s=0.5)
    assert gone(deaf.pid) and 0.5 <= time.monotonic() - started < 5  # SIGKILL once the grace period passed


def test_stop_leaves_a_later_runs_pid_file(tmp_path: Path, sleeper: subprocess.Popen):
    (tmp_path / "sleeper.pid").write_text("4242\n")  # a later start on the same state dir wrote its own
    daemon.stop(tmp_path, {"sleeper": sleeper}, grace_s=5)
    assert gone(sleeper.pid) and (tmp_path / "sleeper.pid").read_text() == "4242\n"


def test_stop_leftovers_stops_what_a_crashed_run_left(tmp_path: Path, sleeper: subprocess.Popen):
    daemon.stop_leftovers(tmp_path, {"sleeper": SLEEP}, grace_s=5)
    assert gone(sleeper.pid) and not (tmp_path / "sleeper.pid").exists()


@pytest.mark.parametrize("which", ["same binary, another cwd", "same cwd, another binary"])
def test_stop_leftovers_spares_a_pid_now_used_by_something_else(which: str, tmp_path: Path, bystander):
    state_dir, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    state_dir.mkdir()
    elsewhere.mkdir()
    if which == "same binary, another cwd":
        other = bystander([SLEEP, "60"], elsewhere)
    else:
        other = bystander([sys.executable, "-c", "import time; time.sleep(60)"], state_dir)
    (state_dir / "sleeper.pid").write_text(f"{other.pid}\n")
    daemon.stop_leftovers(state_dir, {"sleeper": SLEEP}, grace_s=5)
    assert other.poll() is None and not (state_dir / "sleeper.pid").exists()


def test_stop_leftovers_passes_over_missing_and_garbled_pid_files(tmp_path: Path):
    (tmp_path / "garbled.pid").write_text("not a pid\n")
    daemon.stop_leftovers(tmp_path, {"garbled": SLEEP, "missing": SLEEP}, grace_s=1)
    assert not (tmp_path / "garbled.pid").exists()


def test_check_free_refuses_a_bound_port_with_the_callers_error(tmp_path: Path):
    class CallersError(DaemonError):
        pass

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CallersError, match=rf"127\.0\.0\.1:{port} for sleeper is in use .*`ss -ltnp 'sport = :{port}'`"):
            daemon.check_free("sleeper", port, "--port", CallersError)
    daemon.check_free("sleeper", port, "--port")  # closed again: free


def test_wait_ready_fails_at_once_with_the_log_tail_when_the_daemon_exits(tmp_path: Path):
    process = daemon.launch(tmp_path, "failing", ["sh", "-c", "echo 'address already in use'; exit 3"])
    started = time.monotonic()
    with pytest.raises(DaemonError, match=r"failing exited with 3:\naddress already in use\n\(whole log: .*failing\.log\)"):
        daemon.wait_ready(tmp_path, {"failing": (process, lambda: False)}, timeout_s=30)
    assert time.monotonic() - started < 5


def test_wait_ready_returns_once_it_answers_and_times_out_if_it_never_does(tmp_path: Path, sleeper: subprocess.Popen):
    answers = iter([False, False, True])
    daemon.wait_ready(tmp_path, {"sleeper": (sleeper, lambda: next(answers))}, timeout_s=30)
    with pytest.raises(DaemonError, match="sleeper not ready after 0 s"):
        daemon.wait_ready(tmp_path, {"sleeper": (sleeper, lambda: False)}, timeout_s=0.3)


@pytest.mark.parametrize("same_port", [True, False], ids=["same port", "another port"])
def test_a_redis_start_stops_the_redis_a_crashed_run_left_in_its_state_dir(same_port: bool, tmp_path: Path):
    crashed = redis_server.start(free_port(), tmp_path)  # never stopped, as if its run had crashed
    crashed.wait_ready()
    with redis_server.start(crashed.port if same_port else free_port(), tmp_path) as server:
        assert gone(crashed.pid)
        server.wait_ready()
        crashed.stop()  # nothing of its own left: the later run's process and pid file stay
        assert (tmp_path / "redis.pid").read_text().strip() == str(server.pid)
        assert not gone(server.pid)


def test_a_redis_start_spares_a_redis_of_another_state_dir_whose_pid_it_finds(tmp_path: Path):
    with redis_server.start(free_port(), tmp_path / "other") as other:
        other.wait_ready()
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "redis.pid").write_text(f"{other.pid}\n")  # stale, and the pid now someone else's
        with redis_server.start(free_port(), tmp_path / "state") as server:
            server.wait_ready()
            assert not gone(other.pid) and not gone(server.pid)
