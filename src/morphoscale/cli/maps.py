"""Verbs of the map: align and aggregate embeddings, then measure the map.

A verb is its options: one typer option per parameter, which the formatter writes over three
or four lines each, and a short body; that is why some verbs run past 60 lines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..maps import DEFAULT_ALIGNER, aligner_help
from .app import app, assignments, err_console, out_console, print_table


@app.command(name="map")
def map_(
    embeddings: Annotated[
        Path,
        typer.Option(
            "--embeddings",
            help="Well- or site-level embeddings (.h5ad; obs: perturbation, perturbation_type, is_control, batch), or "
            "a table made elsewhere (.parquet/.csv: RxRx3-core, JUMP, or columns you name).",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="The map to write (.h5ad); aligned wells go beside it as <name>.wells.h5ad.")
    ],
    align: Annotated[str, typer.Option("--align", help=aligner_help())] = DEFAULT_ALIGNER,
    aggregate: Annotated[str, typer.Option("--aggregate", help="mean or median.")] = "mean",
    exclude: Annotated[
        Optional[list[str]], typer.Option("--exclude", help="Perturbations to leave out (repeatable).")
    ] = None,
    held_out_of: Annotated[
        Optional[Path],
        typer.Option(
            "--held-out-of",
            help="A train folder whose config has a split: keep only the wells it held out of training.",
        ),
    ] = None,
    metadata: Annotated[
        Optional[Path],
        typer.Option(
            "--metadata",
            help="A table's well metadata in a separate file (RxRx3-core: metadata_rxrx3_core.csv), joined on the id column.",
        ),
    ] = None,
    layout: Annotated[
        str,
        typer.Option(
            "--layout",
            help="A table's layout: auto (default), rxrx3-core, jump, morphoscale (our parquet export), or columns "
            "(roles named by --column); docs/published.md.",
        ),
    ] = "auto",
    column: Annotated[
        Optional[list[str]],
        typer.Option(
            "--column",
            help="ROLE=NAME: the table column playing a role (perturbation, type, control, batch, plate, well, "
            "concentration, id); repeatable.",
        ),
    ] = None,
    control: Annotated[
        Optional[str],
        typer.Option(
            "--control",
            help="The value marking a negative-control well in the control column (RxRx3-core: EMPTY_control; JUMP: negcon).",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
):
    """Align embeddings on control wells and aggregate them into a map of perturbations."""
    from ..data.split import scored_part, split_of_training
    from ..errors import ConfigError
    from ..io import check_output, refuse_overlap
    from ..maps.build import build_map, read_embeddings, wells_path, write_map

    for target in (out, wells_path(out)):
        refuse_overlap(target, embeddings, metadata, held_out_of)
        check_output(target, overwrite)
    if str(embeddings).endswith(".h5ad"):
        if metadata or column or control or layout != "auto":
            raise ConfigError(
                "--metadata, --layout, --column and --control read a table made elsewhere (.parquet, .csv); an .h5ad carries its own obs"
            )
        emb = read_embeddings(embeddings)
    else:
        from ..maps.external import read_external

        emb = read_external(embeddings, metadata, layout, assignments(column, "--column", "ROLE=NAME"), control)
    if held_out_of is not None:
        emb = scored_part(emb, split_of_training(held_out_of), str(embeddings))
    m, aligned = build_map(emb, align=align, method=aggregate, exclude=exclude)
    write_map(m, aligned, out, overwrite)
    n_ctrl = int(m.obs["is_control"].sum())
    kept = m.uns["alignment"]
    out_console.print(
        f"wrote {out}: {m.n_obs - n_ctrl} perturbation profiles (+{n_ctrl} control) x {m.n_vars} dims, aligned with {align} "
        f"on {kept['n_controls']} control wells ({kept['n_components']} components kept of {kept['n_features_in']}), "
        f"{aggregate} per perturbation",
        markup=False,
        highlight=False,
    )


@app.command()
def bench(
    map_path: Annotated[Path, typer.Option("--map", help="A map written by `morphoscale map`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the tables, figures and summary.json.")],
    embeddings: Annotated[
        Optional[Path],
        typer.Option("--embeddings", help="Aligned well embeddings (default: the map's <name>.wells.h5ad)."),
    ] = None,
    raw_embeddings: Annotated[
        Optional[Path], typer.Option("--raw-embeddings", help="Unaligned embeddings, for the before/after UMAP.")
    ] = None,
    annotations: Annotated[
        Optional[Path],
        typer.Option(
            "--annotations",
            help="Folder of CORUM/HuMAP/Reactome/SIGNOR/StringDB .txt and CORUM_clusters.tsv (default: the cached efaar annotations).",
        ),
    ] = None,
    pairs: Annotated[
        Optional[list[str]],
        typer.Option("--pairs", help="Extra relationship source NAME=FILE (entity1,entity2 CSV); repeatable."),
    ] = None,
    compound_targets: Annotated[
        Optional[Path], typer.Option("--compound-targets", help="CSV compound,target for compound-gene retrieval.")
    ] = None,
    truth: Annotated[
        Optional[Path],
        typer.Option(
            "--truth",
            help="A simulated screen's ground_truth/ folder: decoding R2 and cosine correlation with the true phenotypes.",
        ),
    ] = None,
    clustering: Annotated[
        bool, typer.Option("--clustering", help="Also run UMAP + HDBSCAN clustering scores (slow).")
    ] = False,
    metrics: Annotated[
        Optional[list[str]],
        typer.Option(
            "--metrics",
            help="Only these metrics, comma-separated or repeated: recall, complexes, map_consistency, compound_gene, drug_similarity, "
            "map_target_consistency, consistency, magnitude, map_activity, drug_vs_control, umap, clustering, "
            "decoding_r2, truth_cosine (default: all the map supports but clustering and map_target_consistency).",
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Recall and the cheapest checks only (recall, complexes, consistency, compound_gene, truth_cosine).",
        ),
    ] = False,
    protocol: Annotated[
        Optional[str],
        typer.Option(
            "--protocol",
            help="A published benchmark's metrics and steps: rxrx3-core (the paper: CRISPR-only recall, compound-gene "
            "retrieval), rxrx3-core-notebook, jump; docs/published.md.",
        ),
    ] = None,
    null_size: Annotated[
        int, typer.Option("--null-size", min=100, help="Draws of each mAP null (p-values resolve to 1 / (draws + 1)).")
    ] = 10000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of every sampled null.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No line per metric as it finishes.")] = False,
):
    """Measure how well a map recovers known biology (relationship recall, mAP, ...), each number with its 95% interval."""
    from ..bench import summary as bench_summary
    from ..bench.suite import run_bench
    from ..report.console import bench_tables

    extra = {name: Path(path) for name, path in assignments(pairs, "--pairs", "NAME=FILE").items()}
    log = None if quiet else (lambda line: err_console.print(line, markup=False, highlight=False))
    run_bench(
        map_path,
        out,
        embeddings,
        raw_embeddings,
        annotations,
        extra,
        compound_targets,
        clustering,
        null_size=null_size,
        seed=seed,
        overwrite=overwrite,
        truth=truth,
        metrics=metrics,
        quick=quick,
        log=log,
        protocol=protocol,
    )
    res = bench_summary.read(out)
    for table in bench_tables(res):
        print_table(table)
    for key, why in res.skipped().items():
        out_console.print(f"skipped {key}: {why}", markup=False, highlight=False)
    out_console.print(f"wrote {out}/summary.json and tables")
