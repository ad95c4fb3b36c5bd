"""Print a short summary of image stores: `python -m morphoscale.data.summary STORE...`."""

from __future__ import annotations

import sys

import numpy as np
from rich.console import Console
from rich.table import Table

from .store import ImageStore


def summarize(paths: list[str]) -> Table:
    table = Table("store", "sites", "channels", "size", "dtype", "batches", "controls", "mean intensity per channel")
    for p in paths:
        s = ImageStore(p)
        n, c, h, w = s.shape
        means = [float(np.mean([s.read(i)[k].mean() for i in range(min(n, 16))])) for k in range(c)]
        table.add_row(
            str(p), str(n), ", ".join(s.channels), f"{h}x{w}", str(s.dtype),
            str(s.sites["batch"].nunique()), str(int(s.sites["is_control"].sum())),
            ", ".join(f"{ch} {m:.0f}" for ch, m in zip(s.channels, means)),
        )
    return table


if __name__ == "__main__":
    Console().print(summarize(sys.argv[1:]))
