"""A serving engine's process tree drops to a lower CPU priority, every thread of it, and never rises."""

import os
import subprocess
import sys
import time

import psutil
import pytest

from serve.engine_start import LOW_NICENESS, lower_cpu_priority

# a parent with an extra thread and a child process: the shape of a replica, its EngineCore and their threads
TREE = ("import subprocess, sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('ready', flush=True); time.sleep(60)\n")


def threads_of(root: psutil.Process) -> list[int]:
    return [t.id for p in (root, *root.children(recursive=True)) for t in p.threads()]


@pytest.fixture
def process_tree():
    process = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        root = psutil.Process(process.pid)
        while not root.children():
            time.sleep(0.05)
        yield root
    finally:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait()


def test_idle_puts_every_thread_of_the_tree_under_sched_idle(process_tree):
    threads = threads_of(process_tree)
    assert len(threads) >= 3 and os.SCHED_IDLE not in {os.sched_getscheduler(t) for t in threads}
    assert lower_cpu_priority("idle", root=process_tree.pid) == len(threads)
    assert {os.sched_getscheduler(t) for t in threads} == {os.SCHED_IDLE}
    assert lower_cpu_priority("idle", root=process_tree.pid) == 0  # already there


def test_low_sets_the_lowest_niceness_and_never_raises_priority(process_tree):
    threads = threads_of(process_tree)
    assert lower_cpu_priority("low", root=process_tree.pid) == len(threads)
    assert {os.getpriority(os.PRIO_PROCESS, t) for t in threads} == {LOW_NICENESS}
    assert lower_cpu_priority("low", root=process_tree.pid) == 0


def test_an_unknown_priority_is_refused():
    with pytest.raises(ValueError, match="'lowest'"):
        lower_cpu_priority("lowest")
