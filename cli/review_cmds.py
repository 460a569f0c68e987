"""Review commands: `coyo-db review keeper|not-duplicate|copy|not-copy ID` and `review list`.

The same decisions as the web app's review forms (`coyo-db serve`), through the same library
function, :func:`coyo_db.review.decisions.review`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coyo_db.cli.common import HomeOption, open_catalog, stdout

review_app = typer.Typer(
    help="Accept or overturn dedup keepers and audit hits; exports honour the decisions.",
    no_args_is_help=True,
)

IdArgument = Annotated[int, typer.Argument(help="The image's id.", show_default=False)]
MethodOption = Annotated[
    str, typer.Option("--method", help="The dedup method (dup_groups.method), e.g. phash_pairs_r4.")
]
RefsetOption = Annotated[str, typer.Option("--refset", help="The reference set.")]
RefIdOption = Annotated[int, typer.Option("--ref-id", help="The reference's ref_id.")]
NoteOption = Annotated[str | None, typer.Option("--note", help="Why (kept with the decision).")]
ReviewerOption = Annotated[
    str | None, typer.Option("--reviewer", help="Who decides (default: the login name).")
]


def _record(home: str | None, decision: str, id_: int, **subject: object) -> None:
    from coyo_db.review.decisions import review

    done = review(open_catalog(home, create=False), decision, id_, **subject)  # type: ignore[arg-type]
    stdout.print(done.line())


@review_app.command("keeper")
def keeper(
    id_: IdArgument,
    method: MethodOption,
    note: NoteOption = None,
    reviewer: ReviewerOption = None,
    home: HomeOption = None,
) -> None:
    """Keep this image of its duplicate group (accepts or changes the keeper)."""
    _record(home, "keeper", id_, method=method, note=note, reviewer=reviewer)


@review_app.command("not-duplicate")
def not_duplicate(
    id_: IdArgument,
    method: MethodOption,
    note: NoteOption = None,
    reviewer: ReviewerOption = None,
    home: HomeOption = None,
) -> None:
    """This image is not a duplicate of its group: it stays whatever the keeper."""
    _record(home, "not_duplicate", id_, method=method, note=note, reviewer=reviewer)


@review_app.command("copy")
def copy(
    id_: IdArgument,
    refset: RefsetOption,
    ref_id: RefIdOption,
    note: NoteOption = None,
    reviewer: ReviewerOption = None,
    home: HomeOption = None,
) -> None:
    """This image copies the reference: accepts a hit, or marks a near miss a copy."""
    _record(home, "copy", id_, refset=refset, ref_id=ref_id, note=note, reviewer=reviewer)


@review_app.command("not-copy")
def not_copy(
    id_: IdArgument,
    refset: RefsetOption,
    ref_id: RefIdOption,
    note: NoteOption = None,
    reviewer: ReviewerOption = None,
    home: HomeOption = None,
) -> None:
    """This image does not copy the reference: overturns an audit hit."""
    _record(home, "not_copy", id_, refset=refset, ref_id=ref_id, note=note, reviewer=reviewer)


@review_app.command("list")
def list_reviews(
    latest: Annotated[
        bool, typer.Option("--latest", help="Only the decision that counts on each subject.")
    ] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="table, csv, json or parquet.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    home: HomeOption = None,
) -> None:
    """The decisions made, newest first."""
    from coyo_db.results.output import write_result
    from coyo_db.review.decisions import reviews

    table = reviews(open_catalog(home, create=False), latest=latest)
    write_result(table, fmt, output, max_rows=100)


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
