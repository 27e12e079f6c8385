"""A server binary run as our child: how it is started, awaited, stopped and found again, for every such daemon (Redis in
redis_server.py, Prometheus and Alertmanager in observe/servers.py) alike.

Each daemon runs in its own session, so a Ctrl-C at the terminal reaches only us and we stop it in order; on Linux
through `setpriv --pdeathsig TERM` (util-linux), so the kernel stops it when the thread that started it dies, even by
SIGKILL. Its cwd is its state dir, which holds its output (<name>.log) and its pid (<name>.pid). A later start on that
state dir stops what a crashed run left there: a pid file's process only if it still runs that executable with that state
dir as its cwd (not its command line, which redis-server rewrites), so a pid reused by something else is spared.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

HOST = "127.0.0.1"
READY_POLL_S = 0.1
LOG_TAIL_LINES = 20

Probe = tuple[subprocess.Popen, Callable[[], bool]]  # the daemon's process, and whether it answers yet


class DaemonError(RuntimeError):
    """A daemon could not be started or did not come up; the message says why and where its log is."""


def launch(state_dir: Path, name: str, cmd: list[str]) -> subprocess.Popen:
    """Start `cmd` in its own session with cwd `state_dir`, output to <name>.log and pid to <name>.pid."""
    pdeathsig = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []
    with open(state_dir / f"{name}.log", "wb") as log:
        process = subprocess.Popen([*pdeathsig, *cmd], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=state_dir, start_new_session=True)
    _pid_file(state_dir, name).write_text(f"{process.pid}\n")
    return process


def check_free(name: str, port: int, option: str, error: type[DaemonError] = DaemonError) -> None:
    """Refuse a taken port up front (bound as the daemons bind it: SO_REUSEADDR, so a closing socket does not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as e:
            raise error(f"{HOST}:{port} for {name} is in use ({e.strerror}): stop what listens there "
                        f"(`ss -ltnp 'sport = :{port}'`) or choose another {option}") from None


def wait_ready(state_dir: Path, probes: Mapping[str, Probe], timeout_s: float, error: type[DaemonError] = DaemonError) -> None:
    """Until every daemon answers; fail at once, with its log's end, if one exits (a taken port, a bad config)."""
    deadline, pending = time.monotonic() + timeout_s, dict(probes)
    while pending := {name: probe for name, probe in pending.items() if not _is_ready(state_dir, name, *probe, error)}:
        if time.monotonic() > deadline:
            raise error(f"{', '.join(pending)} not ready after {timeout_s:.0f} s; logs in {state_dir}")
        time.sleep(READY_POLL_S)


def stop(state_dir: Path, processes: Mapping[str, subprocess.Popen], grace_s: float) -> None:
    """Stop our children by pid (SIGTERM, SIGKILL after `grace_s`), reap them and remove the pid files still theirs."""
    _terminate([psutil.Process(p.pid) for p in processes.values() if p.poll() is None], grace_s)
    for name, process in processes.items():
        process.wait()  # returns at once (psutil reaped it); without it Popen warns the child still runs
        _remove_pid_file(state_dir, name, process.pid)


def stop_leftovers(state_dir: Path, executables: Mapping[str, str], grace_s: float) -> None:
    """Stop what a crashed run left in `state_dir`: each <name>.pid's process still running `executables[name]` there."""
    state_dir = state_dir.resolve()
    _terminate([p for name, executable in executables.items() if (p := _leftover(state_dir, name, executable))], grace_s)


def _pid_file(state_dir: Path, name: str) -> Path:
    """Where the daemon `name` started in `state_dir` has its pid."""
    return state_dir / f"{name}.pid"


def _is_ready(state_dir: Path, name: str, process: subprocess.Popen, answers: Callable[[], bool],
             error: type[DaemonError]) -> bool:
    """Whether the daemon answers yet; raises, with its log's end, if it exited instead."""
    if (code := process.poll()) is not None:
        raise error(f"{name} exited with {code}:\n{_log_tail(state_dir, name)}")
    return answers()


def _leftover(state_dir: Path, name: str, executable: str) -> psutil.Process | None:
    """The process <name>.pid names, if it runs `executable` with cwd `state_dir`; the pid file is removed either way."""
    file = _pid_file(state_dir, name)
    try:
        process = psutil.Process(int(file.read_text()))
        ours = Path(process.cwd()) == state_dir and Path(process.exe()) == Path(executable).resolve()
    except (OSError, ValueError, psutil.Error):  # no pid file, a garbled one, a gone or foreign process
        return None
    finally:
        file.unlink(missing_ok=True)
    return process if ours else None


def _terminate(processes: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM each, SIGKILL those still running after `grace_s`, and wait for them (psutil reaps our own children)."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=grace_s)


def _remove_pid_file(state_dir: Path, name: str, pid: int) -> None:
    """Remove <name>.pid if it still holds `pid` (not a later run's)."""
    file = _pid_file(state_dir, name)
    if file.exists() and file.read_text().strip() == str(pid):
        file.unlink()


def _log_tail(state_dir: Path, name: str) -> str:
    """The end of <name>.log, for an error message, and where the whole log is."""
    log = state_dir / f"{name}.log"
    return "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]) + f"\n(whole log: {log})"
