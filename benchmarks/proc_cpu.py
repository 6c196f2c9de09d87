"""CPU time of the processes a workload involves, from Linux's ``/proc``.

The latency run of workload 8 spreads one message's work over five processes
(the sender, PostgreSQL, the relay, RabbitMQ, the consumer). What each spent
per message says which of them a machine runs out of first. A server is
found by the loopback port it listens on and counted with its descendants
(PostgreSQL's backends, each in a session of its own; RabbitMQ's helpers),
children that exited included. Elsewhere than on Linux, or for a server on another machine, the
figure is ``None``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["listener_tree", "process_cpu", "self_cpu", "tree_cpu"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _fields(pid: int | str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # After "pid (comm) ": state ppid pgrp session ... utime(11) stime cutime cstime
    return text[text.rfind(")") + 2 :].split()


def _seconds(fields: list[str], children: bool) -> float:
    ticks = int(fields[11]) + int(fields[12])
    if children:  # children it waited for (a server's exited backends)
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def self_cpu() -> float:
    """CPU seconds (user + system) of this process, its children excluded."""
    times = os.times()
    return times.user + times.system


def process_cpu(pid: int) -> float | None:
    """CPU seconds of one process (None once it is gone)."""
    fields = _fields(pid)
    return None if fields is None else _seconds(fields, children=False)


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its descendants, with the children they reaped."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _fields(entry)
            if fields is not None:
                parents[int(entry)], stats[int(entry)] = int(fields[1]), fields
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(_seconds(stats[pid], children=True) for pid in tree if pid in stats)


def _links(pid: str) -> set[str]:
    links: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or not ours to read
        return links
    for fd in fds:
        try:
            links.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile (the listing's own descriptor, for one)
            continue
    return links


def listener_tree(port: int) -> Callable[[], float] | None:
    """A reader of the CPU seconds of the process that listens on ``port`` and its
    descendants (None: no such process on this machine)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        if inodes.intersection(_links(entry)):
            root = int(entry)
            return lambda: tree_cpu(root)
    return None
