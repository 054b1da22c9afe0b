"""`vaekit serve`: the latent explorer, a static page and a JSON/PNG API over an AE and/or a VAE.

Every input is validated (latent length, counts, image type and size, body size) and answered with a
4xx and a clear message; inference runs under no_grad on small batches, so no request can hang.
"""


import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from vaekit.config import DataConfig, trained_data_config
from vaekit.data import Batches, Dataset, map_batches
from vaekit.data.folder import load_image, pil_errors
from vaekit.errors import VaekitError
from vaekit.evaluation.latent import Projection, interpolate
from vaekit.files import read_json
from vaekit.images import png_bytes
from vaekit.models import Autoencoder, GaussianMixture, load_model
from vaekit.web.guard import LOOPBACK, Guard, Workers

MAX_BODY = 2 * 2**20  # bytes in any request
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_N = 64
Z_LIMIT = 100.0  # |z_i| beyond this is no code any decoder has seen; refused rather than decoded to noise


@dataclass
class Explorer:
    """What the API serves: named models (each with its priors: N(0, I) and a mixture fitted to its training
    codes), their test codes in 2-D."""

    models: dict[str, Autoencoder]
    data: Dataset
    test_images: torch.Tensor  # float (N, C, H, W), a sample of the test split
    test_labels: list[int]
    maps: dict[str, dict]
    data_config: DataConfig = field(default_factory=DataConfig)  # how the models' training images were read

    @classmethod
    def build(cls, models: dict[str, Autoencoder], data: Dataset, n_map: int = 2000, seed: int = 0) -> "Explorer":
        n = min(n_map, len(data.test))
        images = data.test.subset(torch.arange(n))
        x = torch.cat(list(Batches(images, 1000)))
        labels = images.labels.tolist() if images.labels is not None else [0] * n
        maps = {}
        for name, model in models.items():
            model.eval()
            p = Projection.fit(map_batches(model.embed, images, 1000, model.device))
            maps[name] = {"points": np.round(p.xy, 3).tolist(), "labels": labels, "axes": p.axes,
                          "basis": p.basis.T.tolist(), "offset": p.offset.tolist()}
            if "gmm" not in model.priors:  # a checkpoint from before mixtures were saved with it
                codes = map_batches(model.embed, data.train, 1000, model.device, limit=5000)
                model.priors["gmm"] = GaussianMixture.fit(codes, 10, seed)
        data_config = trained_data_config(next(iter(models.values())).meta)
        return cls(models, data, x, labels, maps, data_config)


def png_b64(images: torch.Tensor) -> str:
    """Images side by side, no border, about 96 pixels tall, as base64 PNG for JSON."""
    return base64.b64encode(png_bytes(images, nrow=len(images), pad=0, height=96)).decode()


class SampleRequest(BaseModel):
    n: int = Field(8, ge=1, le=MAX_N, description="images per model")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="seed of the z draws; none: random")


class InterpolateRequest(BaseModel):
    a: int = Field(..., ge=0, description="index of a test image (see /api/test-images)")
    b: int = Field(..., ge=0, description="index of another test image")
    steps: int = Field(8, ge=2, le=32)


def create_app(explorer: Explorer, hosts: Sequence[str] = LOOPBACK, token: str | None = None,
               workers: Workers | None = None) -> FastAPI:
    """The API over `explorer`, answering only for `hosts` (and with `token`, if given); model work runs on
    `workers`, off the event loop."""
    app = FastAPI(title="vaekit latent explorer", version="1",
                  description="Decode z ~ N(0, I) with an AE and a VAE side by side, explore the latent space, "
                              "encode your own images.")
    app.add_middleware(Guard, hosts=hosts, token=token, max_body=MAX_BODY)
    ex, work = explorer, workers or Workers()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each problem, never echoing the input (it may be huge, or NaN that JSON cannot carry)."""
        problems = [{"loc": [str(part)[:50] for part in e.get("loc", ())], "msg": str(e.get("msg", ""))[:200],
                     "type": str(e.get("type", ""))} for e in exc.errors()[:10]]
        return JSONResponse({"detail": problems}, status_code=422)
    # The schema names the served models and the latent size, so clients (and property tests) know them.
    ModelName = Enum("ModelName", {name: name for name in ex.models}, type=str)
    dims = {m.latent_dim for m in ex.models.values()}
    size = {"min_length": dims.pop(), "max_length": None} if len(dims) == 1 else {"min_length": 1, "max_length": 1024}
    size["max_length"] = size["max_length"] or size["min_length"]

    class DecodeRequest(BaseModel):
        model: ModelName = Field(..., description="a name from /api/models")
        z: list[float] = Field(..., description="one latent vector", **size)

    def model_named(name: ModelName) -> Autoencoder:
        return ex.models[name.value]

    def check_z(model: Autoencoder, z: list[float]) -> torch.Tensor:
        if len(z) != model.latent_dim:
            raise HTTPException(422, f"z has {len(z)} values; this model's latent space has {model.latent_dim}")
        t = torch.tensor(z, dtype=torch.float32)
        if not torch.isfinite(t).all() or t.abs().max() > Z_LIMIT:
            raise HTTPException(422, f"z values must be finite and within [-{Z_LIMIT:g}, {Z_LIMIT:g}]")
        return t

    @app.get("/api/models", summary="the models being served")
    def models() -> list[dict]:
        return [{"name": n, "kind": m.kind, "latent_dim": m.latent_dim, "image_shape": list(m.config.image_shape),
                 "arch": m.config.arch, "classes": ex.data.classes} for n, m in ex.models.items()]

    @app.post("/api/sample", summary="decode the same z ~ N(0, I) with every model, plus GMM samples")
    async def sample(req: SampleRequest) -> dict:
        return await work.run(draw, req)

    def draw(req: SampleRequest) -> dict:
        g = torch.Generator().manual_seed(req.seed if req.seed is not None else int(torch.randint(0, 2**31 - 1, ())))
        dims = {m.latent_dim for m in ex.models.values()}
        z = torch.randn(req.n, max(dims), generator=g)
        out = {"z": z.tolist(), "images": {}, "gmm": {}}
        with torch.no_grad():
            for name, m in ex.models.items():
                out["images"][name] = [png_b64(img[None]) for img in m.generate(z[:, :m.latent_dim])]
                out["gmm"][name] = [png_b64(img[None]) for img in m.sample(req.n, generator=g, prior="gmm")]
        return out

    @app.post("/api/decode", summary="decode one latent vector to a PNG", response_class=Response,
              responses={200: {"content": {"image/png": {}}}})
    async def decode(req: DecodeRequest) -> Response:
        m = model_named(req.model)
        z = check_z(m, req.z)
        image = await work.run(generate, m, z[None])
        return Response(base64.b64decode(png_b64(image)), media_type="image/png")

    def generate(m: Autoencoder, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return m.generate(z)

    @app.get("/api/map", summary="2-D map of test codes (PCA, or the codes for a 2-D latent) for a model")
    def latent_map(model: ModelName) -> dict:
        return ex.maps[model.value]

    @app.get("/api/test-images", summary="a strip of test images to pick from, by index")
    def test_images(start: Annotated[int, Query(ge=0)] = 0, count: Annotated[int, Query(ge=1, le=64)] = 16) -> dict:
        if start >= len(ex.test_images):
            raise HTTPException(422, f"start must be below {len(ex.test_images)}")
        imgs = ex.test_images[start:start + count]
        return {"start": start, "images": [png_b64(i[None]) for i in imgs],
                "labels": ex.test_labels[start:start + count], "total": len(ex.test_images)}

    @app.post("/api/interpolate", summary="decode the straight line between the codes of two test images")
    async def interpolate_images(req: InterpolateRequest) -> dict:
        n = len(ex.test_images)
        if req.a >= n or req.b >= n:
            raise HTTPException(422, f"image indices must be below {n}")
        return await work.run(interpolate_between, ex.test_images[[req.a, req.b]], req.steps)

    def interpolate_between(x: torch.Tensor, steps: int) -> dict:
        out = {}
        with torch.no_grad():
            for name, m in ex.models.items():
                z = m.embed(x)
                out[name] = [png_b64(i[None]) for i in m.generate(interpolate(z[0], z[1], steps))]
        return out

    async def read_upload(file: UploadFile) -> bytes:
        data = await file.read(MAX_BODY + 1)
        if not data:
            raise HTTPException(422, "the uploaded file is empty")
        return data

    def decode_upload(data: bytes) -> torch.Tensor:
        """The upload read as the training images were (alpha on the same background, 16 bits scaled, the same
        resize policy), by the folder loader's own decoder."""
        from PIL import Image

        shape = next(iter(ex.models.values())).config.image_shape
        try:
            with pil_errors(Path("upload")), Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_UPLOAD_PIXELS:
                    raise HTTPException(413, f"image is {img.width}x{img.height}; at most {MAX_UPLOAD_PIXELS} pixels")
            x = load_image(io.BytesIO(data), shape, ex.data_config.resize, ex.data_config.background)
        except VaekitError as e:
            raise HTTPException(413 if "too many pixels" in str(e) else 415, str(e)[:200]) from None
        return x[None].float() / 255.0

    @app.post("/api/reconstruct", summary="reconstruct an uploaded image with every model")
    async def reconstruct(file: Annotated[UploadFile, File(description="PNG, JPEG, ... image")]) -> dict:
        return await work.run(reconstruct_upload, await read_upload(file))

    def reconstruct_upload(data: bytes) -> dict:
        x = decode_upload(data)
        with torch.no_grad():
            return {"input": png_b64(x), **{n: png_b64(m.reconstruct(x)) for n, m in ex.models.items()}}

    @app.post("/api/encode", summary="encode an uploaded image: the AE's code, the VAE's mu, sigma and samples")
    async def encode(file: Annotated[UploadFile, File(description="PNG, JPEG, ... image")],
                     samples: Annotated[int, Query(ge=1, le=16)] = 6) -> dict:
        return await work.run(encode_upload, await read_upload(file), samples)

    def encode_upload(data: bytes, samples: int) -> dict:
        x = decode_upload(data)
        out = {"input": png_b64(x)}
        with torch.no_grad():
            for name, m in ex.models.items():
                q = m.encode(x)
                out[name] = {"z": q.mean[0].tolist(), "mean_decoded": png_b64(m.generate(q.mean))}
                if m.has_density:  # the same x, different z = mu + sigma * eps
                    z = q.sample(samples)[:, 0]
                    out[name].update(mu=q.mean[0].tolist(), sigma=q.sigma[0].tolist(), z=z.tolist(),
                                     decoded=[png_b64(i[None]) for i in m.generate(z)])
        return out

    static = resources.files("vaekit.web") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    return app


def load_models(paths: list[str]) -> dict[str, Autoencoder]:
    """A `vaekit compare` run folder (the checkpoints it compared), or one or two checkpoints / run folders."""
    folder = Path(paths[0])
    if len(paths) == 1 and (folder / "metrics.json").is_file():
        metrics = read_json(folder / "metrics.json")
        compared = metrics.get("checkpoints") if isinstance(metrics, dict) else None
        if isinstance(compared, dict) and set(compared) == {"ae", "vae"}:
            paths = [str(folder / compared[kind]) for kind in ("ae", "vae")]
    if len(paths) == 1 and (folder / "ae").is_dir() and (folder / "vae").is_dir():
        paths = [str(folder / "ae"), str(folder / "vae")]
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
          allow_remote: bool = False, token: str | None = None) -> None:
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
        link = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
        print(f"vaekit explorer on {link}  ({', '.join(models)}; Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning" if quiet else "info",
                timeout_keep_alive=5, limit_concurrency=64)


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

