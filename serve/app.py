"""The web app: a JSON API over a caption bundle and an audio index, and the page that uses it.

    POST /api/caption   multipart ``file`` [, ``beam_size``]        -> {"caption", "silent", "audio", "spectrogram"}
    POST /api/similar   multipart ``file`` [, ``top``]              -> {"results": [{"file", "score", "url",
                                                                        "caption", "duration", "spectrogram"}]}
    POST /api/labels    multipart ``file``, ``labels`` (comma/line-separated) -> {"labels": [{"label", "score"}]}
    POST /api/search    JSON {"query", "top"}                       -> {"query", "results": [...]}
    GET  /audio/<file>  an indexed file (only those: any other name is a 404)
    GET  /spectrogram/<file>  its log-mel spectrogram, a small PNG
    GET  /health        models loaded and where they run, index size, queue
    GET  /              the page

Every error is JSON ``{"error": reason}`` with a 4xx status (408 when a request body stops coming, 503 with
Retry-After when the queue is full, 504 past the timeout). Uploads go to a fresh temporary folder under a fixed name
and are deleted with it after the request.
"""
from __future__ import annotations

import base64
import functools
import re
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException

from captioning.bundle import Pipeline
from captioning.infer import caption_files
from common.tensor import module_device
from features.audio import AudioError
from retrieval.index import AudioIndex
from serve.limits import ApiError, Limits, check_audio, check_int, check_query, save_upload
from serve.middleware import BodyDeadline, BodyLimit, RequestLog
from serve.spectrogram import file_spectrogram_png
from serve.worker import Busy, Worker

STATIC = Path(__file__).with_name("static")
UPLOAD_ROUTES = ("/api/caption", "/api/similar", "/api/labels")
FORM_SLACK = 1 << 16  # room for the multipart framing and form fields beside the file
JSON_LIMIT = 1 << 20  # any other request body (a search is a few hundred bytes)


class Search(BaseModel):
    # strict: `"top": true` or `"top": "3"` is refused, not read as 1 or 3; an unknown key (a typo) too
    model_config = ConfigDict(strict=True, extra="forbid")

    query: str
    top: int = 10


def _whole_number(value: Any) -> Any:
    """A form value (always text) as an int only when written as one: '3.0', '1_000' or 'true' are refused."""
    if isinstance(value, str) and not re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        raise PydanticCustomError("int_form", "Input should be a whole number such as 5 (found {found})",
                                  {"found": repr(value)})
    return value


FormInt = Annotated[int, BeforeValidator(_whole_number)]


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def _results(rows: list[tuple[str, float]], index: AudioIndex) -> list[dict[str, Any]]:
    """Each found file with what a person needs to judge it: its caption (the index's, "" if none), duration,
    spectrogram and audio."""
    return [{"file": name, "score": round(score, 4), "url": "/audio/" + quote(name), **index.about[name],
             "spectrogram": "/spectrogram/" + quote(name)} for name, score in rows]


def _audio_errors(fn):
    """``fn`` with an unreadable clip (header fine, data not) turned into a 422, for the inference thread."""
    def wrapped(*args):
        try:
            return fn(*args)
        except AudioError as err:
            raise ApiError(422, f"could not read the audio: {err.reason}") from None
    return wrapped


def create_app(pipeline: Pipeline | None = None, index: AudioIndex | None = None, limits: Limits = Limits()
               ) -> FastAPI:
    """The app over a loaded caption pipeline and/or audio index (at least one)."""
    if pipeline is None and index is None:
        raise ValueError("Nothing to serve. (expected a caption bundle, an audio index or both)")
    worker = Worker(limits.max_waiting, limits.timeout)
    devices = {"captioner": str(module_device(pipeline.encoder))} if pipeline is not None else {}
    devices |= {"index": str(module_device(index.models[0]))} if index is not None else {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.close()

    app = FastAPI(title="aactk: captions and sound search", docs_url=None, redoc_url=None, lifespan=lifespan)
    upload_limit = (limits.max_upload_bytes + FORM_SLACK, f"upload larger than {limits.max_upload_mb:g} MB")
    other_limit = (JSON_LIMIT, f"request larger than {JSON_LIMIT >> 10} kB")
    app.add_middleware(BodyLimit, limit=lambda path: upload_limit if path in UPLOAD_ROUTES else other_limit)
    app.add_middleware(BodyDeadline, seconds=limits.read_timeout)
    app.add_middleware(RequestLog)  # outermost: it sees every status, the body limit's too
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.worker = worker

    # ---- errors: always {"error": reason} -------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.reason, exc.headers)

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> JSONResponse:
        return _error(503, f"the server is busy ({worker.waiting} requests waiting); try again in "
                           f"{exc.retry_after} s", {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(TimeoutError)
    async def timeout(request: Request, exc: TimeoutError) -> JSONResponse:
        return _error(504, f"gave up after {limits.timeout:g} s (the server is slow or busy); try a shorter clip "
                           "or try again later")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        reason = exc.detail
        if exc.status_code == 400 and reason == "There was an error parsing the body":
            reason = "could not parse the request body (expected JSON, or a form, in UTF-8)"
        return _error(exc.status_code, str(reason), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}" for e in exc.errors())
        return _error(422, f"invalid request: {problems}")

    def need(model: Any, what: str) -> None:
        if model is None:
            option = "--bundle" if what == "captioner" else "--index"
            raise ApiError(404, f"this server has no {what} (start it with {option})")

    async def with_upload(file: UploadFile, fn, *args) -> tuple[Any, dict]:
        """``fn(path, *args)`` on the inference thread, for an upload saved to a temporary folder and checked."""
        with tempfile.TemporaryDirectory(prefix="aactk-serve-") as tmp:
            path = await save_upload(file, Path(tmp), limits)
            audio = check_audio(path, limits)
            return await worker.run(_audio_errors(fn), path, *args), audio

    # ---- the API ------------------------------------------------------------------------------------------------
    @app.post("/api/caption")
    async def caption(file: UploadFile, beam_size: Annotated[FormInt | None, Form()] = None) -> dict[str, Any]:
        need(pipeline, "captioner")
        beam = check_int(pipeline.decoding["beam_size"] if beam_size is None else beam_size, 1, limits.max_beam,
                         "beam_size")

        def run(path: Path) -> tuple[str, bool, str]:
            captions, errors, silent, _ = caption_files(pipeline, [path], beam_size=beam)
            if errors:
                raise ApiError(422, f"could not read the audio: {next(iter(errors.values()))}")
            picture = base64.b64encode(file_spectrogram_png(path)).decode()
            return captions[str(path)], bool(silent), "data:image/png;base64," + picture

        (text, silent, picture), audio = await with_upload(file, run)
        return {"caption": text, "silent": silent, "beam_size": beam, "audio": audio, "spectrogram": picture}

    @app.post("/api/similar")
    async def similar(file: UploadFile, top: Annotated[FormInt, Form()] = 10) -> dict[str, Any]:
        need(index, "index")
        top = check_int(top, 1, limits.max_top, "top")
        rows, audio = await with_upload(file, index.similar, top)
        return {"results": _results(rows, index), "audio": audio}

    @app.post("/api/labels")
    async def labels(file: UploadFile, labels: Annotated[str, Form()]) -> dict[str, Any]:
        need(index, "index")
        names = [check_query(x, limits, "label") for x in re.split(r"[,\n]", labels) if x.strip()]
        if not names:
            raise ApiError(400, "no labels: give a few, separated by commas")
        if len(names) > limits.max_labels:
            raise ApiError(413, f"too many labels: {len(names)} (at most {limits.max_labels})")
        rows, audio = await with_upload(file, index.labels, names)
        return {"labels": [{"label": label, "score": round(score, 4)} for label, score in rows], "audio": audio}

    @app.post("/api/search")
    async def search(body: Search) -> dict[str, Any]:
        need(index, "index")
        query = check_query(body.query, limits)
        top = check_int(body.top, 1, limits.max_top, "top")
        rows = await worker.run(index.search, query, top)
        return {"query": query, "results": _results(rows, index)}

    def indexed(name: str) -> Path:
        need(index, "index")
        try:
            path = index.file(name)  # only the index's own files: any other name, '../' ones too, is a KeyError
        except KeyError:
            raise ApiError(404, f"no sound named {name!r} in the index") from None
        if not path.is_file():
            raise ApiError(404, f"{name!r} is in the index but gone from its folder")
        return path

    @app.get("/audio/{name:path}", name="audio")
    async def audio(name: str) -> FileResponse:
        return FileResponse(indexed(name))

    @functools.lru_cache(maxsize=1024)  # a page shows the same results again and again; a changed file has a new key
    def picture(path: Path, mtime_ns: int) -> bytes:
        return file_spectrogram_png(path)

    @app.get("/spectrogram/{name:path}")
    async def spectrogram(name: str) -> Response:
        path = indexed(name)
        png = await worker.run(_audio_errors(picture), path, path.stat().st_mtime_ns)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "captioner": pipeline is not None, "index": index is not None,
                "index_size": len(index) if index is not None else 0, "devices": devices,
                "queue": {"running": min(worker.pending, 1), "waiting": worker.waiting,
                          "max_waiting": limits.max_waiting},
                "limits": {"max_upload_mb": limits.max_upload_mb, "max_seconds": limits.max_seconds,
                           "formats": list(limits.formats), "max_query_chars": limits.max_query_chars,
                           "max_top": limits.max_top, "max_beam": limits.max_beam,
                           "read_timeout": limits.read_timeout, "max_connections": limits.max_connections}}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
