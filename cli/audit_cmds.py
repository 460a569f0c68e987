"""Contamination commands: `coyo-db refset add|list` and `coyo-db audit`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coyo_db.cli.common import (
    AddressOption,
    EngineOption,
    HomeOption,
    RichProgress,
    WorkersOption,
    open_catalog,
    stdout,
)

refset_app = typer.Typer(
    help="Reference (evaluation) image sets the audit looks for: ImageNet val, COCO val2017.",
    no_args_is_help=True,
)

ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Copy descriptor: effnet-lite0 (offline default), isc:/path/isc_ft_v107.pth.tar, "
        "torchscript:/path/sscd.torchscript.pt[@SIZE], open_clip:ARCH:TAG|PATH.",
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1...")]


@refset_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Name of the reference set, e.g. imagenet-val.")],
    path: Annotated[
        Path,
        typer.Argument(
            help="A folder (searched recursively; ImageNet val and COCO val2017 layouts are "
            "recognised), img2dataset shards (.tar / .parquet) or a folder of them."
        ),
    ],
    model: ModelOption = "effnet-lite0",
    replace: Annotated[
        bool, typer.Option("--replace", help="Register again over an existing set of this name.")
    ] = False,
    device: DeviceOption = "auto",
    workers: WorkersOption = None,
    engine: EngineOption = "local",
    address: AddressOption = None,
    home: HomeOption = None,
) -> None:
    """Register a reference set: pHash, copy descriptors and low-information flags."""
    from coyo_db.audit.refset_job import add_refset

    summary = add_refset(
        open_catalog(home),
        name,
        path,
        descriptor=model,
        replace=replace,
        device=device,
        workers=workers,
        engine=engine,
        address=address,
        progress=RichProgress("images"),
    )
    stdout.print(summary.line())


@refset_app.command("list")
def list_cmd(home: HomeOption = None) -> None:
    """The registered reference sets with their sizes and low-information counts."""
    from coyo_db.audit.refsets import list_refsets
    from coyo_db.results.output import render_table

    stdout.print(render_table(list_refsets(open_catalog(home, create=False))), markup=False)


def audit_cmd(
    refset: Annotated[
        list[str],
        typer.Option("--refset", "-r", help="Reference set to audit against (repeatable)."),
    ],
    report: Annotated[
        Path | None, typer.Option("--report", help="Write an HTML report into this folder.")
    ] = None,
    removal_list: Annotated[
        Path | None,
        typer.Option("--removal-list", help="Write the contaminated ids (Parquet: id, reason)."),
    ] = None,
    model: ModelOption = "effnet-lite0",
    path: Annotated[
        list[Path] | None,
        typer.Option("--path", help="Audit these shards or folders instead of the images table."),
    ] = None,
    where: Annotated[
        str | None,
        typer.Option("--where", help="Audit only images rows matching this SQL condition."),
    ] = None,
    verify_above: Annotated[
        float | None,
        typer.Option(
            "--verify-above",
            help="Verify pairs only the descriptor found from this centred cosine up "
            "(default 0.3: all); faster with a discriminative descriptor, at some recall.",
        ),
    ] = None,
    device: DeviceOption = "auto",
    workers: WorkersOption = None,
    home: HomeOption = None,
) -> None:
    """Find dataset images that copy reference images; hits go to table contamination."""
    from dataclasses import replace

    from coyo_db.audit.contamination import audit
    from coyo_db.audit.decision import DEFAULT_POINT
    from coyo_db.audit.removal import write_removal_list

    catalog = open_catalog(home, create=False)
    point = DEFAULT_POINT
    if verify_above is not None:
        point = replace(DEFAULT_POINT, verify_cosine=verify_above)
    summary = audit(
        catalog,
        refset,
        descriptor=model,
        paths=path or None,
        where=where,
        point=point,
        device=device,
        workers=workers,
        progress=RichProgress("images"),
    )
    stdout.print(summary.line())
    if removal_list is not None:
        count = write_removal_list(catalog, removal_list)
        stdout.print(f"removal list: {count:,} ids -> {removal_list}")
    if report is not None:
        from coyo_db.audit.report import write_report

        index = write_report(catalog, report, refsets=refset)
        stdout.print(f"report: {index}")


def register(app: typer.Typer) -> None:
    app.add_typer(refset_app, name="refset")
    app.command("audit")(audit_cmd)
