"""The latent explorer: API validation, property tests against the OpenAPI schema, and the page in a real
Chromium against a real server on loopback."""

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import anyio
import numpy as np
import pytest
import schemathesis
from conftest import chromium_page
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from PIL import Image
from schemathesis.checks import not_a_server_error

from vaekit import RunConfig
from vaekit.config import DataConfig, ModelConfig, TrainConfig
from vaekit.data import load_dataset
from vaekit.training import train
from vaekit.web.app import Explorer, create_app, load_models


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    for kind in ("ae", "vae"):
        run = RunConfig(model=ModelConfig(kind=kind), data=DataConfig(name="digits"),
                        train=TrainConfig(epochs=3, samples=4))
        train(run, root / kind, quiet=True)
    return root


@pytest.fixture(scope="module")
def client(runs):
    models = load_models([str(runs)])  # a compare-style folder with ae/ and vae/
    app = create_app(Explorer.build(models, load_dataset(DataConfig(name="digits"))))
    return TestClient(app, base_url="http://127.0.0.1")


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_models_and_same_z_for_every_decoder(client):
    models = client.get("/api/models").json()
    assert {m["name"] for m in models} == {"ae", "vae"} and all(m["latent_dim"] == 8 for m in models)
    a = client.post("/api/sample", json={"n": 5, "seed": 3}).json()
    b = client.post("/api/sample", json={"n": 5, "seed": 3}).json()
    assert a == b and len(a["z"]) == 5 and len(a["images"]["ae"]) == len(a["images"]["vae"]) == 5
    assert len(a["gmm"]["ae"]) == 5
    img = Image.open(io.BytesIO(base64.b64decode(a["images"]["vae"][0])))
    assert img.size[0] >= 64


def test_decode_returns_a_png_and_validates_z(client):
    r = client.post("/api/decode", json={"model": "vae", "z": [0.0] * 8})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (96, 96)
    other = client.post("/api/decode", json={"model": "vae", "z": [2.0] + [0.0] * 7})
    assert other.content != r.content
    cases = [({"model": "vae", "z": [0.0] * 3}, 422, "at least 8 items"),
             ({"model": "gan", "z": [0.0] * 8}, 422, "'ae' or 'vae'"),
             ({"model": "vae", "z": [1e9] * 8}, 422, "within"),
             ({"model": "vae"}, 422, "z"),
             ({"model": "vae", "z": "zeros"}, 422, "z")]
    for body, status, words in cases:
        r = client.post("/api/decode", json=body)
        assert r.status_code == status and words in json.dumps(r.json()["detail"]), (body, r.text)
    nan = client.post("/api/decode", content='{"model": "vae", "z": [NaN, 0, 0, 0, 0, 0, 0, 0]}',
                      headers={"content-type": "application/json"})
    assert nan.status_code == 422


def test_limits_on_counts_and_bodies(client):
    assert client.post("/api/sample", json={"n": 65}).status_code == 422
    assert client.post("/api/sample", json={"n": 0}).status_code == 422
    big = client.post("/api/decode", content=b"{" + b" " * (3 * 2**20) + b"}",
                      headers={"content-type": "application/json"})
    assert big.status_code == 413 and "larger than" in big.json()["detail"]
    assert client.post("/api/interpolate", json={"a": 0, "b": 10**6}).status_code == 422
    assert client.get("/api/map", params={"model": "nope"}).status_code == 422
    assert len(client.get("/api/map", params={"model": "vae"}).json()["points"]) == 180


def test_upload_reconstruct_and_encode(client):
    digit = (np.random.default_rng(0).random((20, 20)) * 255).astype(np.uint8)
    r = client.post("/api/reconstruct", files={"file": ("d.png", png_bytes(digit), "image/png")})
    assert r.status_code == 200 and {"input", "ae", "vae"} <= r.json().keys()
    e = client.post("/api/encode", files={"file": ("d.png", png_bytes(digit), "image/png")}, params={"samples": 4})
    vae, ae = e.json()["vae"], e.json()["ae"]
    assert len(vae["mu"]) == len(vae["sigma"]) == 8 and all(s > 0 for s in vae["sigma"])
    assert len(vae["decoded"]) == 4 and len({tuple(z) for z in vae["z"]}) == 4  # the same x, different z
    assert "sigma" not in ae and len(ae["z"]) == 8
    bad = [(b"not an image", 415), (b"", 422), (png_bytes(np.zeros((5000, 5000), dtype=np.uint8)), 413)]
    for content, status in bad:
        r = client.post("/api/reconstruct", files={"file": ("x.png", content, "image/png")})
        assert r.status_code == status, (status, r.text)
    assert "at most 16,777,216" in r.text and "128,000,000" not in r.text  # the limit that applies, not PIL's
    assert client.post("/api/reconstruct").status_code == 422  # no file at all


def test_an_upload_shows_where_each_model_finds_it_unlikely(client):
    """Each model's anomaly map of the upload, and how its score stands against the test images': a test digit sits
    among them, a digit with a white bar drawn across it above nearly all, and the bar is where the map is hot."""
    digits = load_dataset(DataConfig(name="digits"))
    digit = digits.test.images[0, 0].numpy()
    damaged = digit.copy()
    damaged[3:5, :] = 255
    plain = client.post("/api/reconstruct", files={"file": ("d.png", png_bytes(digit), "image/png")}).json()
    broken = client.post("/api/reconstruct", files={"file": ("b.png", png_bytes(damaged), "image/png")}).json()
    for name in ("ae", "vae"):
        assert plain["maps"][name]["above"] < 0.95 and broken["maps"][name]["above"] > 0.95
        assert broken["maps"][name]["score"] > plain["maps"][name]["score"]
        heat = np.asarray(Image.open(io.BytesIO(base64.b64decode(broken["maps"][name]["png"]))).convert("L"),
                          dtype=float)
        rows = heat.reshape(8, heat.shape[0] // 8, -1).mean((1, 2))  # the map enlarged: back to 8 rows
        assert rows[3:5].mean() > rows[[0, 1, 6, 7]].mean()


def test_an_upload_is_brought_to_the_data_s_polarity_and_16_bit_images_keep_their_greys(client):
    """The digits are light on dark: a dark mark on white paper is inverted (and says so), a light one on black is
    not; a 16-bit photo is read as the greys it holds, not as white."""
    paper = np.full((40, 60), 255, dtype=np.uint8)
    paper[10:30, 20:40] = 0  # a dark square on white, wider than tall
    answer = client.post("/api/reconstruct", files={"file": ("p.png", png_bytes(paper), "image/png")}).json()
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["input"]))).convert("L"))
    assert any("inverted" in note for note in answer["notes"]) and seen[0, 0] < 50 and seen.max() > 200
    night = client.post("/api/reconstruct", files={"file": ("n.png", png_bytes(255 - paper), "image/png")}).json()
    assert not any("inverted" in note for note in night["notes"]) and night["input"] == answer["input"]
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    deep = client.post("/api/reconstruct", files={"file": ("r.png", png_bytes(ramp), "image/png")}).json()
    grey = np.asarray(Image.open(io.BytesIO(base64.b64decode(deep["input"]))).convert("L"))
    assert 60 < grey.mean() < 200 and grey.std() > 30


OPERATIONS = ["GET /api/models", "POST /api/sample", "POST /api/decode", "GET /api/map", "GET /api/test-images",
              "POST /api/encode", "POST /api/reconstruct", "POST /api/interpolate"]


@pytest.fixture(scope="module")
def api_schema(runs):
    """The schema of an app that also answers to "testserver", the host name Schemathesis' ASGI client sends."""
    app = create_app(Explorer.build(load_models([str(runs)]), load_dataset(DataConfig(name="digits"))),
                     hosts=("127.0.0.1", "testserver"))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_the_property_tests_cover_every_operation(api_schema):
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_openapi_property_tests_find_no_server_errors(api_schema, label):
    """Schemathesis generates valid and invalid requests for every operation: never a 5xx. (Driven through
    Hypothesis directly: schemathesis' pytest plugin reaches into pytest internals that change between releases.)"""

    @given(case=api_schema.find_operation_by_label(label).as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def no_server_error(case):
        case.call_and_validate(checks=[not_a_server_error])

    no_server_error()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, proc: subprocess.Popen) -> None:
    """Until the server on `port` accepts connections (or its process died, with what it said)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            time.sleep(0.2)


@pytest.fixture(scope="module")
def server(runs):
    port = free_port()
    env = {**os.environ, "VAEKIT_DATA": str(runs / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "serve", str(runs / "ae"), str(runs / "vae"),
                             "--port", str(port), "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(port, proc)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def test_a_stopped_server_is_said_in_words_on_the_page(runs):
    """The server killed under an open page: the next action says there is no answer and what to do, not a bare
    "Failed to fetch"."""
    port = free_port()
    env = {**os.environ, "VAEKIT_DATA": str(runs / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "serve", str(runs / "ae"), str(runs / "vae"), "--port",
                             str(port), "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(port, proc)
    errors: list[str] = []
    try:
        with chromium_page(errors, allowed=("data:", "blob:", f"http://127.0.0.1:{port}")) as page:
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            proc.kill()
            proc.wait(timeout=10)
            page.click("#sample-btn")
            page.wait_for_selector("#sample .status.error", timeout=10_000)
            said = page.text_content("#sample .status")
    finally:
        proc.kill()
    assert "no answer from the vaekit server" in said and "vaekit serve" in said, said


def test_page_in_headless_chromium(server, tmp_path):
    (tmp_path / "mine.png").write_bytes(png_bytes((np.random.default_rng(1).random((32, 32)) * 255).astype(np.uint8)))
    errors: list[str] = []
    pixels = "(sel) => { const i = document.querySelector(sel); const c = document.createElement('canvas');" \
             " c.width = i.naturalWidth; c.height = i.naturalHeight; c.getContext('2d').drawImage(i, 0, 0);" \
             " return c.toDataURL(); }"
    with chromium_page(errors, allowed=("data:", "blob:", server)) as page:
        decoded: list[list[float]] = []
        page.on("request", lambda r: decoded.append(json.loads(r.post_data)["z"]) if r.url.endswith("/api/decode")
                else None)
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        # the page opens with samples
        page.wait_for_selector(".row[data-model='vae'][data-sampler='prior'] img")
        for name in ("ae", "vae"):
            loaded = page.eval_on_selector_all(f".row[data-model='{name}'][data-sampler='prior'] img",
                                               "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
            assert loaded and all(loaded), (name, loaded)

        page.wait_for_function("document.querySelector('#explore-img').naturalWidth > 0")
        before = page.evaluate(pixels, "#explore-img")
        slider = page.locator("#sliders input").first
        slider.fill("2.5")
        slider.dispatch_event("input")
        page.wait_for_function(f"({pixels})('#explore-img') !== {json.dumps(before)}", timeout=10_000)

        map_click_decodes_the_z_the_map_shows(page, decoded)

        (tmp_path / "not-an-image.png").write_bytes(b"no picture here")
        page.set_input_files("#upload-input", str(tmp_path / "not-an-image.png"))
        page.wait_for_selector("#upload .status.error")  # the error beside the upload box, nothing stale below it
        assert "415" in page.inner_text("#upload .status") or "image" in page.inner_text("#upload .status")
        page.set_input_files("#upload-input", str(tmp_path / "mine.png"))
        page.wait_for_selector("#recon-vae img")
        page.wait_for_selector("#posterior-vae img")
        assert page.eval_on_selector("#recon-ae img", "i => i.naturalWidth") > 0

        for i in (0, 5):  # by keyboard
            page.locator("#strip img").nth(i).focus()
            page.keyboard.press("Enter")
        page.wait_for_selector("#interp-rows .row[data-model='vae'] img")
        page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)

        page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen, text readable
        page.reload()
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        smallest = page.evaluate("Math.min(...[...document.querySelectorAll('p, label, span, h1, h2, button')]"
                                 ".filter(e => e.offsetWidth).map(e => parseFloat(getComputedStyle(e).fontSize)))")
        assert smallest >= 12, smallest
        page.screenshot(path=str(tmp_path / "explorer-390.png"), full_page=True)
        page.goto(server + "/docs")  # offline: no script from a CDN (chromium_page records any other request)
        assert "/api/sample" in page.inner_text("table")
    assert not [e for e in errors if "status of 415" not in e], errors  # the 415: the upload that is not an image
    for name in ("explorer.png", "explorer-390.png"):
        shot = np.asarray(Image.open(tmp_path / name).convert("L"))
        assert shot.shape[0] > 1200 and shot.std() > 20


def map_click_decodes_the_z_the_map_shows(page, decoded: list[list[float]]) -> None:
    """A click on the AE's map decodes z = u * PC1 + v * PC2 for the (u, v) under the pointer, and the readout and the
    red cross say so; on the plane through the codes' mean, z moves off the plane by the codes' mean."""
    page.select_option("#explore-model", "ae")
    page.wait_for_function("state.maps.ae !== undefined")
    inner = page.evaluate("[document.querySelector('#map').clientWidth, document.querySelector('#map').clientHeight]")
    at = {"x": inner[0] / 2 + 40, "y": inner[1] / 2 - 30}  # 40 px right of the origin, 30 px up (padding box)
    page.locator("#map").click(position=at)
    page.wait_for_function("state.clicked !== null")
    m = page.evaluate("({map: state.maps.ae, z: state.z.ae, clicked: state.clicked, width: document"
                      ".querySelector('#map').width})")
    scale = m["map"]["scale"] * inner[0] / m["width"]  # CSS pixels per unit of the map
    u, v = 40 / scale, 30 / scale
    assert m["clicked"] == pytest.approx([u, v], abs=0.05)
    u, v = m["clicked"]
    expected = u * np.array(m["map"]["basis"][0]) + v * np.array(m["map"]["basis"][1])
    assert np.allclose(m["z"], expected, atol=1e-6)
    readout = page.inner_text("#z-readout")  # "decoded z: |z| = 1.23, inside N(0, I)'s 99% ball ..."
    shown = float(readout.split("|z| = ")[1].split(",")[0])
    assert shown == pytest.approx(np.linalg.norm(m["z"]), abs=0.006) == pytest.approx(np.hypot(*m["clicked"]),
                                                                                       abs=0.006), readout
    for _ in range(50):  # what the decoder is sent is what the map shows
        if decoded and np.allclose(decoded[-1], m["z"], atol=1e-6):
            break
        page.wait_for_timeout(100)
    assert decoded and np.allclose(decoded[-1], m["z"], atol=1e-6)
    reds = ("(() => { const c = document.querySelector('#map'); const d = c.getContext('2d').getImageData(0, 0, "
            "c.width, c.height).data; let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 180 && d[i + 1] < 40 "
            "&& d[i + 2] < 40) n++; return n; })()")  # the red cross's pixels
    assert page.evaluate(reds) > 10
    page.evaluate("(() => { const s = document.querySelector('#sliders input'); s.value = 0.5; "
                  "s.dispatchEvent(new Event('input')); })()")  # a slider moved: the map point is no longer z
    page.wait_for_function("state.clicked === null")
    page.wait_for_timeout(300)
    assert page.evaluate(reds) == 0
    page.focus("#map")  # the keyboard's way: arrows move the point from where it is
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowUp")
    page.wait_for_function("state.clicked !== null")
    assert page.evaluate("state.clicked") == pytest.approx([0.1, 0.5], abs=1e-9)
    page.select_option("#plane", "mean")
    page.locator("#map").click(position=at)
    page.wait_for_function("state.clicked !== null")
    z = np.array(page.evaluate("state.z.ae"))
    assert np.allclose(z, expected + np.array(m["map"]["offset"]), atol=0.05)
    page.select_option("#plane", "origin")


# --- probes of a real server on loopback, as an attacker or a heavy user would send them -------------------


def raw(server: str, method: str, path: str, body: bytes = b"", headers: dict | None = None,
        conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes, http.client.HTTPConnection]:
    """One request on a keep-alive connection (a new one unless given); returns status, body and connection."""
    host, port = server.removeprefix("http://").split(":")
    conn = conn or http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    return response.status, response.read(), conn


NON_FINITE = [("/api/sample", b'{"n": NaN}'), ("/api/sample", b'{"n": Infinity, "seed": 1}'),
              ("/api/sample", b'{"seed": -Infinity}'), ("/api/interpolate", b'{"a": 0, "b": 1, "steps": NaN}'),
              ("/api/interpolate", b'{"a": Infinity, "b": 1}'), ("/api/interpolate", b'{"a": 0, "b": NaN}'),
              ("/api/decode", b'{"model": NaN, "z": [0, 0, 0, 0, 0, 0, 0, 0]}'),
              ("/api/decode", b'{"model": "vae", "z": [NaN, 0, 0, 0, 0, 0, 0, 0]}'),
              ("/api/decode", b'{"model": "vae", "z": [Infinity, 0, 0, 0, 0, 0, 0, 0]}'),
              ("/api/decode", b'{"model": "vae", "z": NaN}')]


@pytest.mark.parametrize("path, body", NON_FINITE)
def test_non_finite_json_gets_a_422_and_the_connection_stays_open(server, path, body):
    status, answer, conn = raw(server, "POST", path, body)
    assert status == 422, answer[:500]
    assert b"NaN" not in answer and b"Infinity" not in answer  # the input is never echoed
    status, _, _ = raw(server, "GET", "/api/models", conn=conn)  # the same keep-alive connection
    assert status == 200


def test_errors_never_echo_a_huge_input(server):
    body = json.dumps({"model": "vae", "z": [0.5] * 400_000}).encode()
    status, answer, _ = raw(server, "POST", "/api/decode", body)
    assert status == 422 and len(answer) < 2000


@pytest.mark.parametrize("headers, status", [
    ({"Host": "evil.example"}, 400),  # DNS rebinding: a foreign name pointing at 127.0.0.1
    ({"Host": "evil.example:8000"}, 400),
    ({"Host": "[x"}, 400),  # malformed: refused, not a 500
    ({"Origin": "http://[x"}, 403),
    ({"Origin": "http://evil.example"}, 403),  # a page on another site posting (no-cors) to the API
    ({"Sec-Fetch-Site": "cross-site"}, 403),
    ({"Sec-Fetch-Site": "same-site"}, 403),  # another port of the same machine is another origin
    ({"Sec-Fetch-Site": "same-origin"}, 200),
    ({}, 200),  # curl, scripts: no browser headers
])
def test_only_the_bound_host_and_same_origin_pages_are_served(server, headers, status):
    got, answer, _ = raw(server, "POST", "/api/sample", b'{"n": 1, "seed": 0}', headers)
    assert got == status, answer[:300]
    same = {"Origin": server}
    assert raw(server, "POST", "/api/sample", b'{"n": 1, "seed": 0}', same)[0] == 200


@pytest.mark.parametrize("method, path, headers, status", [
    ("GET", "/", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}, 200),
    ("GET", "/docs", {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate"}, 200),  # a link from another page
    ("GET", "/", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "iframe"}, 403),
    ("GET", "/api/models", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, 403),  # the API: never
    ("POST", "/", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, 403),
])
def test_a_link_from_another_site_opens_the_page_but_not_the_api(server, method, path, headers, status):
    got, answer, _ = raw(server, method, path, b"", headers)
    assert got == status, answer[:300]


def test_a_stalled_body_is_cut_off(runs):
    from vaekit.web.guard import Guard

    app = create_app(Explorer.build(load_models([str(runs)]), load_dataset(DataConfig(name="digits"))))
    guarded = Guard(app.build_middleware_stack(), body_seconds=0.2)
    sent = []

    async def slow_receive():
        await anyio.sleep(5)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/sample", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"2"), (b"content-type", b"application/json")]}
    anyio.run(guarded, scope, slow_receive, send)
    assert sent[0]["status"] == 408


def test_model_work_is_bounded_and_the_overflow_gets_503():
    from fastapi import HTTPException

    from vaekit.web.guard import Workers

    workers, release, results = Workers(threads=1, queue=1), threading.Event(), []

    async def main():
        async def job():
            try:
                results.append(await workers.run(release.wait, 10))
            except HTTPException as e:
                results.append(e.status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(job)
            await anyio.sleep(0.3)
            release.set()

    anyio.run(main)
    assert sorted(map(str, results)) == ["503", "503", "True", "True"]  # one running, one queued, two turned away


def test_serving_beyond_loopback_needs_an_opt_in_and_a_token(runs, tmp_path):
    env = {**os.environ, "VAEKIT_DATA": str(runs / "cache")}
    cmd = [sys.executable, "-m", "vaekit", "serve", str(runs / "ae"), str(runs / "vae")]
    refused = subprocess.run([*cmd, "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--allow-remote" in refused.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = subprocess.run([*cmd, "--port", str(busy.getsockname()[1])], env=env, capture_output=True,
                               text=True, timeout=60)
    assert taken.returncode == 2 and len(taken.stderr.strip().splitlines()) == 1 and "cannot listen" in taken.stderr

    client = TestClient(create_app(Explorer.build(load_models([str(runs)]), load_dataset(DataConfig(name="digits"))),
                                   token="s3cret"), base_url="http://127.0.0.1")
    assert client.get("/api/models").status_code == 401
    assert client.get("/api/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    page = client.get("/?token=s3cret")
    assert page.status_code == 200 and "vaekit_token=s3cret" in page.headers["set-cookie"]
    assert client.get("/api/models").status_code == 200  # the page's own requests carry the cookie


def test_head_of_the_page_and_the_offline_api_page(server):
    status, body, _ = raw(server, "HEAD", "/")
    assert status == 200 and body == b""
    status, body, _ = raw(server, "GET", "/docs")
    assert status == 200 and b"/api/sample" in body and b"<script" not in body  # no Swagger UI from a CDN
    page = body.decode()
    assert "application/json: n, seed, label" in page and "a*, b*, steps" in page  # each body's fields, required *
    assert "multipart/form-data: file*" in page


def test_idle_and_slow_connections_cannot_hold_the_server_and_the_log_keeps_no_token(runs):
    """64 connections that send nothing, one that sends its headers a line a second, 40 more from the same client:
    a real request still gets through at once, the slow and idle ones are closed after --header-timeout, a client
    keeps a bounded number of connections; the access log shows the request without its token."""
    port = free_port()
    env = {**os.environ, "VAEKIT_DATA": str(runs / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "serve", str(runs / "vae"), "--port", str(port),
                             "--token", "s3cret", "--header-timeout", "2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "?token=s3cret" in proc.stdout.readline()  # the link the user opens carries it
        wait_for(port, proc)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
        started = time.time()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/models?token=s3cret", timeout=10) as r:
            assert r.status == 200 and time.time() - started < 5
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/models?%74oken=s3cret", timeout=10) as r:
            assert r.status == 200  # the name percent-encoded: the guard reads it, the log must hide it too
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /api/models HTTP/1.1\r\n")
        closed_after = None
        for _ in range(20):
            time.sleep(0.5)
            try:
                slow.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed_after = time.time() - started
                break
        assert closed_after is not None and closed_after < 8
        assert sum(open_socket(s) for s in idle) == 0  # the idle ones went too
        more = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        time.sleep(0.3)
        assert sum(open_socket(s) for s in more) <= 32
    finally:
        proc.terminate()
        access, log = proc.communicate(timeout=10)  # uvicorn writes its access log to stdout
    assert "/api/models?token=(hidden)" in access and "/api/models?%74oken=(hidden)" in access
    assert "s3cret" not in access + log


def open_socket(s: socket.socket) -> bool:
    """Whether the server still holds the connection (it has not closed its end)."""
    s.settimeout(0.05)
    try:
        return s.recv(1) != b""
    except TimeoutError:
        return True
    except OSError:
        return False


def test_a_server_on_every_address_prints_a_link_a_browser_can_open():
    from vaekit.web.app import link

    everywhere = link("0.0.0.0", 8000, "t0k")
    assert "0.0.0.0" not in everywhere.split()[0] and socket.gethostname() in everywhere and "?token=t0k" in everywhere
    assert link("::1", 80, None) == "http://[::1]:80/" and link("127.0.0.1", 8000, None) == "http://127.0.0.1:8000/"
