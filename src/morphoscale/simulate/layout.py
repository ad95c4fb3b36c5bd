"""The plate layout of the simulated screen: batches of plates, controls on every plate,
several guides per gene, replicate wells across batches, several sites per well."""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import pandas as pd

PLATE_SHAPES = {96: (8, 12), 384: (16, 24)}


@dataclass
class LayoutConfig:
    n_batches: int = 3
    plate_size: int = 96
    sites_per_well: int = 2
    guides_per_gene: int = 2
    replicates: int = 2  # batches each guide appears in
    control_fraction: float = 0.1  # at least this fraction of every plate's wells
    control_label: str = "non-targeting"


def plate_wells(plate_size: int) -> list[tuple[str, bool]]:
    rows, cols = PLATE_SHAPES[plate_size]
    out = []
    for r in range(rows):
        for c in range(cols):
            edge = r in (0, rows - 1) or c in (0, cols - 1)
            out.append((f"{string.ascii_uppercase[r]}{c + 1:02d}", edge))
    return out


def make_layout(
    genes: list[str], compounds: list[str], concentrations, cfg: LayoutConfig, rng: np.random.Generator
) -> pd.DataFrame:
    """One row per well: experiment, plate, well, edge, perturbation, perturbation_type, guide, concentration."""
    B = cfg.n_batches
    items: list[list[dict]] = [[] for _ in range(B)]
    for gi, gene in enumerate(genes):
        for k in range(cfg.guides_per_gene):
            start = (gi + k * max(1, B // cfg.guides_per_gene)) % B
            for r in range(min(cfg.replicates, B)):
                items[(start + r) % B].append(
                    {
                        "perturbation": gene,
                        "perturbation_type": "gene",
                        "guide": f"{gene}_g{k + 1}",
                        "concentration": np.nan,
                    }
                )
    for cid in compounds:
        for conc in concentrations:
            for b in range(B):
                items[b].append(
                    {"perturbation": cid, "perturbation_type": "compound", "guide": "", "concentration": float(conc)}
                )
    wells = plate_wells(cfg.plate_size)
    n_ctrl_min = max(1, int(np.ceil(cfg.control_fraction * len(wells))))
    capacity = len(wells) - n_ctrl_min
    rows = []
    for b in range(B):
        batch_items = [items[b][i] for i in rng.permutation(len(items[b]))]
        n_plates = max(1, int(np.ceil(len(batch_items) / capacity)))
        # spread the perturbations evenly, so that every plate has about as many controls
        per_plate = int(np.ceil(len(batch_items) / n_plates))
        for p in range(n_plates):
            chunk = batch_items[p * per_plate : (p + 1) * per_plate]
            order = rng.permutation(len(wells))
            for slot, w in enumerate(order):
                name, edge = wells[w]
                base = {"experiment": f"SIM-{b + 1}", "plate": p + 1, "well": name, "edge": edge}
                if slot < len(chunk):
                    rows.append({**base, **chunk[slot]})
                else:  # the remaining wells, at least n_ctrl_min of them, are controls
                    rows.append(
                        {
                            **base,
                            "perturbation": cfg.control_label,
                            "perturbation_type": "control",
                            "guide": "",
                            "concentration": np.nan,
                        }
                    )
    df = pd.DataFrame(rows).sort_values(["experiment", "plate", "well"]).reset_index(drop=True)
    return df
