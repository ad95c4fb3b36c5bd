"""The simulated screen's ground truth, read back: the oracle encoder (each well's true
morphology parameters as its embedding, the ceiling every learned encoder is read against)
and the tables the truth measures (bench/truth.py) and the training probes read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .biology import PARAMETERS


def oracle_embeddings(sim_dir: Path):
    """The oracle: each well's true morphology parameters, as a well-level AnnData."""
    import anndata as ad

    wells = pd.read_csv(Path(sim_dir) / "ground_truth" / "wells.csv")
    obs = pd.DataFrame(
        {
            "perturbation": wells["perturbation"].astype(str),
            "perturbation_type": wells["perturbation_type"].astype(str),
            "is_control": wells["perturbation_type"].eq("control"),
            "batch": wells["experiment"].astype(str),
            "plate": wells["experiment"].astype(str) + "_" + wells["plate"].astype(str),
            "well": wells["well"].astype(str),
            "concentration": wells["concentration"],
        }
    )
    obs.index = (obs["plate"] + "_" + obs["well"]).to_numpy()
    return ad.AnnData(X=wells[PARAMETERS].to_numpy(np.float32), obs=obs, uns={"provenance": {"embedding": "oracle"}})


def read_truth(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(wells, phenotypes, parameter names) of a simulated screen's ground_truth/ folder."""
    import json

    folder = Path(folder)
    files = {n: folder / n for n in ("wells.csv", "phenotypes.csv", "config.json")}
    for f in files.values():
        if not f.exists():
            raise InputError(f"{f}: not found (give the ground_truth/ folder of a simulated screen)")
    params = json.loads(files["config.json"].read_text()).get("parameters")
    wells, phen = pd.read_csv(files["wells.csv"]), pd.read_csv(files["phenotypes.csv"])
    for name, df, cols in (
        ("wells.csv", wells, ["experiment", "plate", "well", *params]),
        ("phenotypes.csv", phen, ["gene", *params]),
    ):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InputError(f"{folder / name}: missing column(s) {', '.join(missing[:3])}")
    wells["_key"] = wells["experiment"].astype(str) + "_" + wells["plate"].astype(str) + "_" + wells["well"].astype(str)
    return wells, phen, list(params)
