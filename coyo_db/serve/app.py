"""The web app's routes (Flask): pages, images by id, search and review forms, behind a token.

Safe by default (see docs/serve.md):

- every request needs the per-start token: in the URL once (``/?token=...``, which sets an
  HttpOnly, SameSite=Strict cookie and redirects to the same page without it), or the cookie,
  or an ``Authorization: token ...`` header; forms that change the catalog also carry it, so
  another site cannot post them;
- images are named by catalog id (or refset and ref_id), never by a path;
- SQL from a page runs read-only on a restricted connection, and its errors show in the page;
- responses forbid framing, sniffing and referrers, and scripts run from the app only.
"""

from __future__ import annotations

import hmac
import logging
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from coyo_db.errors import CoyoDbError
from coyo_db.serve import pages
from coyo_db.serve.images import THUMB_SIZE, ImageStore, ImageUnavailable

if TYPE_CHECKING:
    import flask

    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

COOKIE = "coyo_db_token"
MAX_UPLOAD = 32 << 20
#: seconds a review waits for another job's writer lock before the page says the catalog is busy
REVIEW_WAIT = 5.0
_HERE = Path(__file__).parent
_CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(catalog: Catalog, token: str, *, reviewer: str | None = None) -> flask.Flask:
    """The app over `catalog`; every request must carry `token` (see the module docstring)."""
    from flask import Flask

    app = Flask(
        __name__,
        template_folder=str(_HERE / "templates"),
        static_folder=str(_HERE / "static"),
    )
    app.config.update(MAX_CONTENT_LENGTH=MAX_UPLOAD, TEMPLATES_AUTO_RELOAD=False)
    app.jinja_env.globals.update(cell=pages.cell, url_with=_url_with)
    state: dict[str, Any] = {
        "catalog": catalog,
        "token": token,
        "store": ImageStore(catalog),
        "reviewer": reviewer or _user(),
        "writing": threading.Lock(),  # one review commit at a time from this server
    }
    app.extensions["coyo_db"] = state
    _guard(app, token)
    _routes(app, state)
    return app


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"


def _same(given: str | None, token: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), token.encode())


def _guard(app: flask.Flask, token: str) -> None:
    from flask import abort, redirect, request

    @app.before_request
    def check_token() -> Any:
        given = request.args.get("token")
        if _same(given, token) and request.method == "GET":
            rest = {k: v for k, v in request.args.items(multi=True) if k != "token"}
            target = request.path + (f"?{urlencode(rest)}" if rest else "")
            response = redirect(target, code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
            return response
        header = request.headers.get("Authorization", "")
        if not (
            _same(request.cookies.get(COOKIE), token)
            or _same(header.removeprefix("token ").strip() if header else None, token)
        ):
            abort(403, "open the URL that coyo-db serve printed: it carries the access token")
        if request.method == "POST" and not _same(request.form.get("_token"), token):
            abort(403, "this form lacks the access token")
        return None

    @app.after_request
    def headers(response: flask.Response) -> flask.Response:
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        if not response.headers.get("Cache-Control"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(413)
    def error_page(error: Any) -> Any:
        return (f"{error.code} {error.name}: {error.description}\n", error.code, _text)


_text = {"Content-Type": "text/plain; charset=utf-8"}


def _url_with(endpoint_args: dict[str, Any], **changes: Any) -> str:
    """The current query string with `changes` applied (for paging links)."""
    merged = {**endpoint_args, **changes}
    return "?" + urlencode({k: v for k, v in merged.items() if v not in (None, "")})


def _image_response(data: bytes, kind: str) -> flask.Response:
    from flask import Response

    response = Response(data, content_type=kind)
    response.headers["Cache-Control"] = "private, max-age=86400, immutable"
    return response


def _routes(app: flask.Flask, state: dict[str, Any]) -> None:
    from flask import abort, redirect, render_template, request, url_for

    catalog: Catalog = state["catalog"]
    store: ImageStore = state["store"]

    def render(template: str, **context: Any) -> str:
        return render_template(
            template, token=state["token"], reviewer=state["reviewer"], **context
        )

    @app.get("/")
    def index() -> Any:
        return redirect(url_for("query", sql=pages.default_sql(catalog)), code=303)

    @app.get("/query")
    def query() -> Any:
        sql = request.args.get("sql") or pages.default_sql(catalog)
        view = request.args.get("view", "grid")
        page = request.args.get("page", 0, type=int)
        result = pages.query_page(catalog, sql, page=page)
        shown = [c.strip() for c in request.args.get("columns", "").split(",") if c.strip()]
        with_images = store.has_images(result.ids) if view == "grid" else set()
        args = {"sql": sql, "view": view, "columns": ",".join(shown)}
        return render(
            "query.html",
            result=result,
            view=view,
            shown=[c for c in shown if c in result.columns] or pages.default_columns(result),
            with_images=with_images,
            args=args,
        )

    @app.get("/image/<int(signed=True):id_>")
    def detail(id_: int) -> Any:
        try:
            info = pages.detail(catalog, id_)
        except CoyoDbError as exc:
            abort(404, str(exc))
        ids = [id_, *(n["id"] for n in info["neighbours"]), *(g["id"] for g in info["groups"])]
        return render(
            "detail.html", info=info, with_images=store.has_images(ids), next=request.full_path
        )

    @app.get("/img/<int(signed=True):id_>")
    def image(id_: int) -> Any:
        try:
            return _image_response(*store.image(id_))
        except ImageUnavailable as exc:
            abort(404, str(exc))

    @app.get("/thumb/<int(signed=True):id_>")
    def thumb(id_: int) -> Any:
        size = min(max(request.args.get("size", THUMB_SIZE, type=int), 32), 1024)
        try:
            return _image_response(store.thumbnail(id_, size), "image/jpeg")
        except ImageUnavailable as exc:
            abort(404, str(exc))

    @app.get("/ref/<refset>/<int(signed=True):ref_id>")
    def reference(refset: str, ref_id: int) -> Any:
        try:
            if request.args.get("full"):
                return _image_response(*store.reference(refset, ref_id))
            return _image_response(store.reference_thumbnail(refset, ref_id), "image/jpeg")
        except ImageUnavailable as exc:
            abort(404, str(exc))

    @app.route("/search", methods=["GET", "POST"])
    def search() -> Any:
        form = request.form if request.method == "POST" else request.args
        hits: list[dict[str, Any]] = []
        error = None
        k = min(max(form.get("k", 24, type=int), 1), 500)
        where = form.get("where") or None
        upload = request.files.get("image") if request.method == "POST" else None
        by_id = form.get("id", "").strip()
        text = form.get("text", "").strip()
        asked = bool((upload and upload.filename) or by_id or text)
        if asked:
            hits, error = _search(catalog, upload, by_id, text, k, where)
        with_images = store.has_images([h["id"] for h in hits])
        return render(
            "search.html", hits=hits, error=error, form=form, asked=asked, with_images=with_images
        )

    @app.get("/duplicates")
    def duplicates() -> Any:
        method = request.args.get("method") or None
        page = max(request.args.get("page", 0, type=int), 0)
        try:
            data = pages.duplicates(catalog, method, page=page)
        except CoyoDbError as exc:
            abort(404, str(exc))
        ids = [m["id"] for s in data["methods"] for g in s["groups"] for m in g["members"]]
        return render(
            "duplicates.html", data=data, with_images=store.has_images(ids), next=request.full_path
        )

    @app.get("/audit")
    def audit() -> Any:
        refset = request.args.get("refset") or None
        data = pages.audit(catalog, refset)
        ids = [r["id"] for r in data["hits"] + data["misses"]]
        return render(
            "audit.html", data=data, with_images=store.has_images(ids), next=request.full_path
        )

    @app.post("/review")
    def review() -> Any:
        from coyo_db.catalog import writer_lock
        from coyo_db.review.decisions import review as record

        form = request.form
        target = form.get("next", "/")
        if not target.startswith("/") or target.startswith("//") or "\\" in target:
            target = "/"
        lock = writer_lock.place(catalog)
        try:
            with state["writing"], writer_lock.writing(lock, "review", timeout=REVIEW_WAIT):
                record(
                    catalog,
                    form.get("decision", ""),
                    int(form.get("id", "")),
                    method=form.get("method") or None,
                    refset=form.get("refset") or None,
                    ref_id=int(form["ref_id"]) if form.get("ref_id") else None,
                    reviewer=form.get("reviewer") or state["reviewer"],
                    note=form.get("note") or None,
                )
        except writer_lock.CatalogBusyError as exc:
            return render("message.html", title="Review not recorded", message=str(exc)), 503
        except (CoyoDbError, ValueError) as exc:
            return render("message.html", title="Review not recorded", message=str(exc)), 400
        return redirect(target, code=303)


def _search(
    catalog: Catalog, upload: Any, by_id: str, text: str, k: int, where: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    if upload is not None and upload.filename:
        with tempfile.TemporaryDirectory(prefix="coyo-db-search-") as folder:
            path = Path(folder) / "query-image"
            upload.save(path)
            return pages.nearest(catalog, image=path, k=k, where=where)
    if by_id:
        try:
            id_ = int(by_id)
        except ValueError:
            return [], f"an id is a whole number, not {by_id!r}"
        return pages.nearest(catalog, id=id_, k=k, where=where)
    return pages.nearest(catalog, text=text, k=k, where=where)
