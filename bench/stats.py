"""Figures: percentiles, and a server's CPU time and memory from /proc.

CPU is utime + stime of the process and its children (nginx's workers), from
/proc/<pid>/stat; peak memory is VmHWM, reset before each case by writing 5 to
/proc/<pid>/clear_refs (ours to reset: the harness started the process), summed over the
tree; RSS over time is VmRSS sampled every 100 ms by a thread.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
GIB = 1 << 30


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def summary(values: array[float] | list[float]) -> dict[str, float]:
    """p50, p99, max and count of a sample."""
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 0.5),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else 0.0,
        "n": float(len(ordered)),
    }


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max over the repeats of one case."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue += [int(child) for child in task.read_text().split()]
            except OSError:
                pass
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0
    for one in tree(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def memory_kib(pid: int, name: str) -> int:
    total = 0
    for one in tree(pid):
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith(name + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def reset_peak(pid: int) -> None:
    for one in tree(pid):
        try:
            Path(f"/proc/{one}/clear_refs").write_text("5")
        except OSError:
            pass


@dataclass
class Usage:
    cpu_s: float
    rss_start_kib: int
    rss_peak_kib: int
    samples: list[tuple[float, float]] = field(default_factory=list)  # (s, MiB)

    def as_dict(self, body_bytes: int) -> dict[str, Any]:
        return {
            "cpu_s": self.cpu_s,
            "cpu_s_per_gib": self.cpu_s / (body_bytes / GIB) if body_bytes else 0.0,
            "rss_start_mib": self.rss_start_kib / 1024,
            "rss_peak_mib": self.rss_peak_kib / 1024,
            "rss_over_time": self.samples,
        }


class ProcSampler:
    """CPU and peak RSS of a process tree over a span; VmRSS every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.1, sample: bool = True) -> None:
        self.pid, self.interval, self.sample = pid, interval, sample
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples: list[tuple[float, float]] = []

    def start(self) -> None:
        reset_peak(self.pid)
        self._cpu = cpu_seconds(self.pid)
        self._rss = memory_kib(self.pid, "VmRSS")
        self._t0 = time.perf_counter()
        if self.sample:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = memory_kib(self.pid, "VmRSS") / 1024
            self._samples.append((round(time.perf_counter() - self._t0, 3), round(rss, 2)))

    def stop(self) -> Usage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        peak = max(memory_kib(self.pid, "VmHWM"), memory_kib(self.pid, "VmRSS"))
        return Usage(cpu_seconds(self.pid) - self._cpu, self._rss, peak, self._samples)
