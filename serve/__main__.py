"""``python -m serve --bundle B.pt --index INDEX.h5``: the page and JSON API (serve/app.py) on uvicorn."""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

import logging

from common.cli import run
from serve.limits import Limits


def serve(bundle: str | None = None, index: str | None = None, onnx_dir: str | None = None, host: str = "127.0.0.1",
          port: int = 8000,
          max_upload_mb: float = Limits.max_upload_mb, max_seconds: float = Limits.max_seconds,
          formats: str = ",".join(Limits.formats), max_channels: int = Limits.max_channels,
          min_sample_rate: int = Limits.min_sample_rate, max_sample_rate: int = Limits.max_sample_rate,
          max_waiting: int = Limits.max_waiting, timeout: float = Limits.timeout,
          max_query_chars: int = Limits.max_query_chars, max_labels: int = Limits.max_labels,
          max_top: int = Limits.max_top, max_beam: int = Limits.max_beam,
          read_timeout: float = Limits.read_timeout, max_connections: int = Limits.max_connections,
          threads: int | None = None, device: str = "auto", log_level: str = "info") -> None:
    """Serve captioning and sound search: a page at http://HOST:PORT/ and a JSON API (docs/serving.md).

    Models are loaded once, at start; one inference runs at a time, on its own thread.

    Args:
        bundle: caption bundle (``python -m captioning.bundle``): enables /api/caption.
        index: audio index (``python -m retrieval.index build``): enables /api/search, /api/similar, /api/labels
            and /audio/. At least one of bundle and index.
        onnx_dir: the folder ``python -m captioning.export`` made from the bundle: captions run with ONNX Runtime
            (the same captions, faster: benchmarks/bench_serving.py).
        host: address to listen on; 127.0.0.1 (this machine only) unless told otherwise.
        port: TCP port.
        max_upload_mb: largest upload (MB), refused while it is read.
        max_seconds: longest clip (s), read from the file's header.
        formats: accepted audio formats, comma-separated (libsndfile's names: WAV, FLAC, OGG).
        max_channels: most channels in a clip.
        min_sample_rate: lowest sample rate (Hz).
        max_sample_rate: highest sample rate (Hz).
        max_waiting: requests that may wait behind the running one; more get 503 with Retry-After.
        timeout: seconds a request may wait and run in all before a 504.
        max_query_chars: longest search query or label (characters).
        max_labels: most labels in one zero-shot request.
        max_top: most results per search.
        max_beam: largest beam size a request may ask for.
        read_timeout: seconds a client has to send a request's headers (from connecting or from its last answer),
            and at most between two pieces of a body; then 408 and the connection closed.
        max_connections: most connections open at once; one more is answered 503 and closed at once.
        threads: CPU threads for inference (default: torch's).
        device: where the models run: auto (a GPU where there is one, else the CPU), cpu, cuda or cuda:N; with
            --onnx_dir the captions run on the CPU whatever it says, the index's models where it says.
        log_level: uvicorn's and this server's log level (one line per request at info).
    """
    import torch
    import uvicorn

    from captioning.bundle import load_bundle
    from common.device import resolve_device
    from retrieval.index import AudioIndex
    from serve.app import create_app
    from serve.connections import guarded_protocol

    if bundle is None and index is None:
        raise ValueError("Nothing to serve. (expected --bundle B.pt, --index INDEX.h5 or both)")
    limits = Limits(max_upload_mb=float(max_upload_mb), max_seconds=float(max_seconds),
                    formats=tuple(f.strip().upper() for f in str(formats).split(",") if f.strip()),
                    max_channels=int(max_channels), min_sample_rate=int(min_sample_rate),
                    max_sample_rate=int(max_sample_rate), max_waiting=int(max_waiting), timeout=float(timeout),
                    max_query_chars=int(max_query_chars), max_labels=int(max_labels), max_top=int(max_top),
                    max_beam=int(max_beam), read_timeout=float(read_timeout),
                    max_connections=int(max_connections))
    protocol = guarded_protocol(limits.read_timeout, limits.max_connections)  # checks both before models load
    if threads:
        torch.set_num_threads(int(threads))
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if onnx_dir is not None and bundle is None:
        raise ValueError("--onnx_dir needs --bundle: the bundle it was exported from")
    resolve_device(device)  # a bad device is refused before any model loads
    pipeline = None if bundle is None else load_bundle(bundle, **(
        {"runtime": "onnx", "onnx_dir": onnx_dir} if onnx_dir is not None else {"device": device}))
    audio_index = AudioIndex(index, device=device) if index is not None else None
    app = create_app(pipeline, audio_index, limits)
    # uvicorn's access log is off: serve's own line per request also gives the time taken; its h11 protocol with
    # the header deadline and connection cap (always h11, even where httptools is installed)
    uvicorn.run(app, host=host, port=int(port), http=protocol, access_log=False, log_level=log_level,
                log_config=None)


if __name__ == "__main__":
    run(serve, "serve", text_args=("bundle", "index", "onnx_dir", "host", "formats"))
