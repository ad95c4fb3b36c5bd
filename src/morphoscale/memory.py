"""Resident memory of this process: now, its high-water mark, and the peak of one piece of work
(a training fit, one bench metric), sampled on a thread while it runs."""

from __future__ import annotations

import os
import resource
import threading


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident memory of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """The highest resident memory seen while it runs (sampled every `interval` s): a run's own
    peak, where the process high-water mark would include every earlier run of a grid."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            self.peak = max(self.peak, rss_mb())
            if self._stop.wait(self.interval):
                break

    def start(self) -> "RssSampler":
        self.peak = rss_mb()
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())
        return self.peak
