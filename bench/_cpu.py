"""CPU accounting from /proc: per process, for the whole machine, and "everyone else".

On a shared 2-core machine a neighbour's test run can halve a throughput number without any
sign in it. So each sample records how much CPU processes other than the bench's own used
during the window (machine busy time minus the bench's processes and wrk), and the harness
waits, within a bound, for the machine to go quiet before it measures.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["process_cpu", "machine_busy", "harness_cpu", "wait_for_quiet", "CpuWindow"]

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User+system CPU seconds of ``pid`` (all its threads); 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy() -> float:
    """CPU seconds all CPUs spent on anything but idle/iowait since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICK


def harness_cpu() -> float:
    """CPU seconds of the harness itself plus its reaped children (wrk is reaped when it ends)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def wait_for_quiet(max_wait: float, threshold_cores: float = 0.3, interval: float = 1.0) -> float:
    """Wait until the machine uses under ``threshold_cores`` over one ``interval`` (while the
    bench itself runs nothing), at most ``max_wait`` seconds. Returns the last busy level."""
    deadline = time.monotonic() + max_wait
    while True:
        start, t0 = machine_busy(), time.monotonic()
        time.sleep(interval)
        busy = (machine_busy() - start) / (time.monotonic() - t0)
        if busy < threshold_cores or time.monotonic() >= deadline:
            return busy


class CpuWindow:
    """CPU used by the bench's processes and by everyone else between ``start`` and ``stop``."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self.ours: dict[int, float] = {}
        self.others_cores = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._busy0 = machine_busy()
        self._harness0 = harness_cpu()
        self._pid0 = {pid: process_cpu(pid) for pid in self.pids}

    def stop(self) -> None:
        wall = max(time.monotonic() - self._t0, 1e-9)
        self.ours = {pid: process_cpu(pid) - self._pid0[pid] for pid in self.pids}
        mine = sum(self.ours.values()) + (harness_cpu() - self._harness0)
        self.others_cores = max(0.0, (machine_busy() - self._busy0 - mine) / wall)
