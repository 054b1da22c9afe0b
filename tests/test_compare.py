"""`vaekit compare --quick` on the real Fashion-MNIST: the report exists, opens in Chromium, and the data say
what the seed claims (an AE decoding z ~ N(0, I) is worse than a VAE)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SLOW, chromium_page, require_fashion_mnist
from PIL import Image

from vaekit.evaluation.results import Comparison


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory, fashion_cache):
    require_fashion_mnist()
    root = tmp_path_factory.mktemp("compare")
    env = {**os.environ, "VAEKIT_DATA": str(fashion_cache)}
    proc = subprocess.run([sys.executable, "-m", "vaekit", "compare", "--quick", "--out", str(root / "cmp")],
                          capture_output=True, text=True, env=env, timeout=SLOW)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "cmp"


def test_quick_compare_writes_json_and_html(quick_report):
    m = json.loads((quick_report / "metrics.json").read_text())
    assert m["same_networks"] and m["quick"]
    assert (quick_report / "report.html").stat().st_size > 50_000  # images are embedded
    assert (quick_report / "ae" / "summary.json").is_file() and (quick_report / "vae" / "summary.json").is_file()
    assert m["classifier_accuracy"] > 0.8
    for kind in ("ae", "vae"):
        for sampler in ("prior", "gmm"):
            assert np.isfinite(m[kind]["samples"][sampler]["frechet"])
    assert "is_nll" in m["vae"] and "is_nll" not in m["ae"]
    typed = Comparison.from_json(m)
    assert typed.to_json() == m and typed["vae"].test.has_bound and not typed["ae"].test.has_bound


def test_the_seed_claim_holds_on_real_data(quick_report):
    m = json.loads((quick_report / "metrics.json").read_text())
    ae, vae, floor = m["ae"]["samples"], m["vae"]["samples"], m["real_floor"]
    assert ae["prior"]["frechet"] > vae["prior"]["frechet"], "AE from N(0, I) should be worse than the VAE"
    assert floor["frechet"] < min(ae["gmm"]["frechet"], vae["gmm"]["frechet"], vae["prior"]["frechet"])
    assert m["vae"]["latent"]["inside_prior_99"] > m["ae"]["latent"]["inside_prior_99"]
    for kind in ("ae", "vae"):  # reconstructions lie between real held-out images and the model's own samples
        recon = m[kind]["reconstruction"]["frechet"]
        assert floor["frechet"] < recon < m[kind]["samples"]["prior"]["frechet"]
    i = m["vae"]["is_nll"]
    assert i["nll"] <= i["nelbo_same_images"] + 3 * i["stderr"] / 10  # IS-NLL below the -ELBO on the same images


def test_report_opens_in_headless_chromium_and_shows_every_image(quick_report, tmp_path):
    errors: list[str] = []
    with chromium_page(errors) as page:
        page.goto((quick_report / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: the page fits, tables and plots scroll
        page.wait_for_timeout(200)
        width = page.evaluate("document.documentElement.scrollWidth")
        page.screenshot(path=str(tmp_path / "report-390.png"))
    assert not errors, errors
    assert width <= 390, width
    assert len(images) >= 9 and all(complete and width > 0 for _, complete, width in images), images
    assert headings[0].startswith("The answer: why a VAE can generate from N(0, I)")  # the answer first
    assert {"Metrics", "Generation from scratch", "The latent space", "Interpolation"} <= set(headings)
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("L"))
    assert shot.shape[0] > 2000 and shot.std() > 20  # a long page with pictures, not a blank


def test_a_comparison_sizes_its_training_to_the_data_unless_told():
    """--quick trains 2 epochs on a large set; a small set gets the epochs it needs for MIN_STEPS (capped, and said);
    given epochs are kept as given."""
    from dataclasses import replace

    from vaekit import RunConfig
    from vaekit.jobs.compare import MAX_SIZED_EPOCHS, MIN_STEPS, sized

    run = RunConfig()
    assert sized(run, 60_000, quick=True, epochs_given=False) == (replace(run, train=replace(run.train, epochs=2)),
                                                                   None)
    small, said = sized(run, 1437, quick=True, epochs_given=False)
    assert small.train.epochs == 42 and 42 * 12 >= MIN_STEPS and "42 epochs instead of 2" in said
    tiny, said = sized(run, 10, quick=False, epochs_given=False)
    assert tiny.train.epochs == MAX_SIZED_EPOCHS and f"at most {MAX_SIZED_EPOCHS}" in said
    mine = replace(run, train=replace(run.train, epochs=3))
    assert sized(mine, 10, quick=True, epochs_given=True) == (mine, None)
