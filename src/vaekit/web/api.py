"""The explorer's routes. Each handler checks what its schema cannot, then hands the model work (the functions
in vaekit.web.explorer) to the workers, off the event loop. The handlers' names make the OpenAPI operation ids."""

import html
from enum import Enum
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from vaekit.web.explorer import (
    Explorer,
    draw_samples,
    encode_upload,
    generate,
    image_pair,
    image_strip,
    interpolate_between,
    latent_vector,
    model_list,
    png,
    reconstruct_upload,
)
from vaekit.web.guard import Workers
from vaekit.web.schemas import LABEL, MAX_BODY, MAX_LABEL, InterpolateRequest, SampleRequest, decode_request


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each problem, never echoing the input (it may be huge, or NaN that JSON cannot carry)."""
    problems = [{"loc": [str(part)[:50] for part in e.get("loc", ())], "msg": str(e.get("msg", ""))[:200],
                 "type": str(e.get("type", ""))} for e in exc.errors()[:10]]
    return JSONResponse({"detail": problems}, status_code=422)


async def read_upload(file: UploadFile) -> bytes:
    """The uploaded file's bytes (at most one more than any body may hold); 422 if it is empty."""
    data = await file.read(MAX_BODY + 1)
    if not data:
        raise HTTPException(422, "the uploaded file is empty")
    return data


def add_model_routes(app: FastAPI, ex: Explorer, work: Workers, names: type[Enum]) -> None:
    """The models, samples from them, a latent vector decoded, and each model's map of test codes."""
    DecodeRequest = decode_request(ex.models, names)

    @app.get("/api/models", summary="the models being served")
    def models() -> list[dict]:
        return model_list(ex)

    @app.post("/api/sample", summary="decode the same z ~ N(0, I) with every model, plus GMM samples")
    async def sample(req: SampleRequest) -> dict:
        return await work.run(draw_samples, ex, req.n, req.seed, req.label)

    @app.post("/api/decode", summary="decode one latent vector to a PNG", response_class=Response,
              responses={200: {"content": {"image/png": {}}}})
    async def decode(req: DecodeRequest) -> Response:
        model = ex.models[req.model.value]
        z = latent_vector(model, req.z)
        image = await work.run(generate, model, z[None], req.label)
        return Response(png(image), media_type="image/png")

    @app.get("/api/map", summary="2-D map of test codes (PCA, or the codes for a 2-D latent) for a model")
    def latent_map(model: names) -> dict:
        return ex.maps[model.value]


def add_test_image_routes(app: FastAPI, ex: Explorer, work: Workers) -> None:
    """Test images to pick from, and the line between the codes of two of them."""

    @app.get("/api/test-images", summary="a strip of test images to pick from, by index")
    def test_images(start: Annotated[int, Query(ge=0)] = 0, count: Annotated[int, Query(ge=1, le=64)] = 16) -> dict:
        return image_strip(ex, start, count)

    @app.post("/api/interpolate", summary="decode the straight line between the codes of two test images")
    async def interpolate_images(req: InterpolateRequest) -> dict:
        x = image_pair(ex, req.a, req.b)
        return await work.run(interpolate_between, ex, x, req.steps)


def add_upload_routes(app: FastAPI, ex: Explorer, work: Workers) -> None:
    """An uploaded image reconstructed, and encoded."""

    @app.post("/api/reconstruct", summary="reconstruct an uploaded image with every model")
    async def reconstruct(file: Annotated[UploadFile, File(description="PNG, JPEG, ... image")],
                          label: Annotated[int | None, Query(ge=0, le=MAX_LABEL, description=LABEL)] = None) -> dict:
        return await work.run(reconstruct_upload, ex, await read_upload(file), label)

    @app.post("/api/encode", summary="encode an uploaded image: the AE's code, the VAE's mu, sigma and samples")
    async def encode(file: Annotated[UploadFile, File(description="PNG, JPEG, ... image")],
                     samples: Annotated[int, Query(ge=1, le=16)] = 6,
                     label: Annotated[int | None, Query(ge=0, le=MAX_LABEL, description=LABEL)] = None) -> dict:
        return await work.run(encode_upload, ex, await read_upload(file), samples, label)


def add_page(app: FastAPI) -> None:
    """The static files and the page at /, which is not part of the API's schema."""
    static = resources.files("vaekit.web") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.api_route("/docs", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(api_page(app.openapi()))

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))


def body_words(schema: dict, op: dict) -> str:
    """An operation's request body: its media type and fields (required ones marked *), from the schema."""
    content = op.get("requestBody", {}).get("content", {})
    if not content:
        return ""
    kind, media = next(iter(content.items()))
    body = media.get("schema", {})
    if "$ref" in body:
        body = schema.get("components", {}).get("schemas", {}).get(body["$ref"].rsplit("/", 1)[-1], {})
    required = set(body.get("required", []))
    fields = ", ".join(f"{name}{'*' if name in required else ''}" for name in body.get("properties", {}))
    return f"{kind}: {fields}" if fields else kind


def api_page(schema: dict) -> str:
    """The API as one offline HTML page (Swagger UI would load its scripts from a CDN): each operation with its
    summary, parameters and body, and the full schema at /openapi.json."""
    rows = []
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            params = ", ".join(p["name"] for p in op.get("parameters", []))
            body = body_words(schema, op)
            rows.append(f"<tr><td><code>{method.upper()} {html.escape(path)}</code></td>"
                        f"<td>{html.escape(op.get('summary', ''))}</td><td>{html.escape(params)}</td>"
                        f"<td>{html.escape(body)}</td></tr>")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width, "
            f"initial-scale=1'><link rel=icon href='data:,'><title>{html.escape(schema['info']['title'])} API</title>"
            "<style>body{font:15px/1.5 "
            "system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em}table{border-collapse:collapse;"
            "display:block;overflow-x:auto}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style>"
            f"</head><body><h1>{html.escape(schema['info']['title'])}: API</h1><p>Every operation; request and "
            "response schemas in <a href='/openapi.json'>/openapi.json</a>. The page itself: <a href='/'>/</a>.</p>"
            "<table><tr><th>operation</th><th>what it does</th><th>parameters</th><th>body (* required)</th></tr>"
            + "".join(rows) + "</table></body></html>")
