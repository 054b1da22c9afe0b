"""`vaekit serve`: the latent explorer, a static page and a JSON/PNG API over an AE and/or a VAE.

Every input is validated (latent length, counts, image type and size, body size) and answered with a
4xx and a clear message; inference runs under no_grad on small batches, so no request can hang.
This module assembles the app and serves it; the request bodies are in `schemas`, the routes in `api`, the
model work they run in `explorer`, and the guard in front of it all in `guard`.
"""

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from vaekit.config import trained_data_config
from vaekit.errors import VaekitError
from vaekit.files import read_json
from vaekit.layout import METRICS_FILE
from vaekit.models import Autoencoder, load_model
from vaekit.models.presets import PLAIN, VARIATIONAL
from vaekit.web.api import add_model_routes, add_page, add_test_image_routes, add_upload_routes, invalid
from vaekit.web.explorer import Explorer
from vaekit.web.guard import HEADER_SECONDS, LOOPBACK, Guard, HideTokens, Workers, guarded_protocol
from vaekit.web.schemas import MAX_BODY, model_names


def create_app(explorer: Explorer, hosts: Sequence[str] = LOOPBACK, token: str | None = None,
               workers: Workers | None = None) -> FastAPI:
    """The API over `explorer`, answering only for `hosts` (and with `token`, if given); model work runs on
    `workers`, off the event loop."""
    app = FastAPI(title="vaekit latent explorer", version="1", docs_url=None, redoc_url=None,  # /docs: offline
                  description="Decode z ~ N(0, I) with an AE and a VAE side by side, explore the latent space, "
                              "encode your own images.")
    app.add_middleware(Guard, hosts=hosts, token=token, max_body=MAX_BODY)
    app.add_exception_handler(RequestValidationError, invalid)
    work = workers or Workers()
    # The schema names the served models and the latent size, so clients (and property tests) know them.
    add_model_routes(app, explorer, work, model_names(explorer.models))
    add_test_image_routes(app, explorer, work)
    add_upload_routes(app, explorer, work)
    add_page(app)
    return app


def load_models(paths: list[str]) -> dict[str, Autoencoder]:
    """A `vaekit compare` run folder (every checkpoint it compared), or checkpoints / run folders."""
    folder = Path(paths[0])
    if len(paths) == 1 and (folder / METRICS_FILE).is_file():
        metrics = read_json(folder / METRICS_FILE)
        compared = metrics.get("checkpoints") if isinstance(metrics, dict) else None
        if isinstance(compared, dict) and compared and all(isinstance(v, str) for v in compared.values()):
            paths = [str(folder / path) for path in compared.values()]  # every model the comparison measured
    if len(paths) == 1 and all((folder / name).is_dir() for name in (PLAIN, VARIATIONAL)):  # compare's two runs
        paths = [str(folder / name) for name in (PLAIN, VARIATIONAL)]
    models: dict[str, Autoencoder] = {}
    for p in paths:
        m = load_model(p)
        name = m.kind if m.kind not in models else f"{m.kind}{len(models) + 1}"
        models[name] = m
    shapes = {tuple(m.config.image_shape) for m in models.values()}
    if len(shapes) > 1:
        raise VaekitError(f"the models were trained on images of different shapes: {sorted(shapes)}")
    return models


def serve(paths: list[str], host: str = "127.0.0.1", port: int = 8000, quiet: bool = False,
          allow_remote: bool = False, token: str | None = None, header_seconds: float = HEADER_SECONDS) -> None:
    """Serve the explorer. Beyond loopback only with `allow_remote`, and then always behind a token (the one
    given, or a new random one printed in the link)."""
    import secrets

    import uvicorn

    from vaekit.data import evaluation_view, load_dataset

    remote = host.strip("[]") not in LOOPBACK
    if remote and not allow_remote:
        raise VaekitError(f"--host {host} would open the API to your network; add --allow-remote to mean it (a token "
                          "is then required)")
    if remote:
        token = token or secrets.token_urlsafe(16)
    check_port_free(host, port)
    models = load_models(paths)
    config = trained_data_config(next(iter(models.values())).meta)
    data = evaluation_view(load_dataset(config), config)
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    hosts = ("*",) if host.strip("[]") in ("0.0.0.0", "::") else (*LOOPBACK, host.strip("[]"))
    app = create_app(Explorer.build(models, data), hosts=hosts, token=token)
    if not quiet:
        print(f"vaekit explorer on {link(host, port, token)}  ({', '.join(models)}; Ctrl-C stops)", flush=True)
    logging.getLogger("uvicorn.access").addFilter(HideTokens())
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning" if quiet else "info",
                timeout_keep_alive=5, limit_concurrency=1024, http=guarded_protocol(header_seconds))


def link(host: str, port: int, token: str | None) -> str:
    """An address a browser can open: a server on every interface (0.0.0.0, ::) by this machine's name."""
    import socket

    bare = host.strip("[]")
    name = socket.gethostname() if bare in ("0.0.0.0", "::") else f"[{bare}]" if ":" in bare else bare
    where = " (every address of this machine)" if bare in ("0.0.0.0", "::") else ""
    return f"http://{name}:{port}/" + (f"?token={token}" if token else "") + where


def check_port_free(host: str, port: int) -> None:
    """Fail in one line before minutes of loading, rather than after the success line."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as e:
            raise VaekitError(f"cannot listen on {host}:{port} ({e.strerror or e}); is another server there? "
                              "choose another --port") from None

