"""Pixel-level anomalies: maps, the localization metrics against hand-computed cases and a brute-force AUPRO,
conformal p-values and Benjamini-Hochberg, synthetic defects, masks read and refused, and the commands end to end."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.config import DataConfig, ModelConfig
from vaekit.data import load_dataset
from vaekit.data.defects import CHANGED, KINDS, defect, write_benchmark
from vaekit.errors import VaekitError
from vaekit.evaluation.detection import benjamini_hochberg, conformal_p_values
from vaekit.evaluation.localization import aupro, f1_max, pixel_auroc, pro_curve
from vaekit.evaluation.maps import anomaly_maps, blur, image_scores, maps_available
from vaekit.models import build_model
from vaekit.models.likelihoods import LIKELIHOODS

# --- the localization metrics --------------------------------------------------------------------------------------


def two_regions() -> tuple[np.ndarray, np.ndarray]:
    """One 3x5 image: a one-pixel region scored highest, a three-pixel region scored lowest, normal pixels between."""
    mask = np.zeros((1, 3, 5), bool)
    mask[0, 0, 0] = True
    mask[0, 2, :3] = True
    scores = np.full((1, 3, 5), 5.0)
    scores[0, 0, 0], scores[0, 2, :3] = 10.0, 0.0
    return scores, mask


def test_aupro_weighs_every_region_alike_where_pixel_auroc_weighs_pixels():
    scores, mask = two_regions()
    # PRO is 0.5 (the small region found, the large one not) from FPR 0 to 1: area 0.5 * 0.3, normalised: 0.5
    assert aupro(scores, mask) == pytest.approx(0.5)
    # the pixels: the one defective pixel above all 11 normal ones, the other three below all of them
    assert pixel_auroc(scores, mask) == pytest.approx(0.25)


def test_aupro_of_a_perfect_map_is_one_and_a_tied_map_interpolates_to_the_limit():
    mask = np.zeros((2, 4, 4), bool)
    mask[0, 1:3, 1:3] = True
    assert aupro(mask.astype(float), mask) == pytest.approx(1.0)
    assert pixel_auroc(mask.astype(float), mask) == pytest.approx(1.0)
    assert f1_max(mask.astype(float), mask) == pytest.approx(1.0)
    # every pixel tied: one step from (0, 0) to (1, 1); at FPR 0.3, PRO 0.3; area 0.045 / 0.3 = 0.15
    assert aupro(np.zeros(mask.shape), mask) == pytest.approx(0.15)


def test_f1_max_by_hand():
    scores = np.array([[[0.9, 0.8, 0.7, 0.1]]])
    mask = np.array([[[True, False, True, False]]])
    # thresholds 0.9: P 1, R 0.5 (F1 0.667); 0.8: P 0.5, R 0.5; 0.7: P 2/3, R 1 (F1 0.8)
    assert f1_max(scores, mask) == pytest.approx(0.8)


def brute_aupro(scores: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """AUPRO by the definition: a threshold at a time, each region's overlap counted anew."""
    from scipy.ndimage import label

    regions = []
    for i, m in enumerate(masks):
        labelled, n = label(m, structure=np.ones((3, 3)))
        regions += [(i, labelled == r) for r in range(1, n + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in np.unique(scores)[::-1]:
        above = scores >= t
        fpr = (above & normal).sum() / normal.sum()
        pro = np.mean([above[i][region].mean() for i, region in regions])
        points.append((fpr, pro))
    x, y = np.array(points).T
    cut = np.searchsorted(x, limit, side="right")
    xs, ys = list(x[:cut]), list(y[:cut])
    if xs[-1] < limit:
        ys.append(np.interp(limit, x[cut - 1:cut + 1], y[cut - 1:cut + 1]))
        xs.append(limit)
    return float(np.trapezoid(ys, xs) / limit)


def test_aupro_equals_the_definition_on_random_maps_with_ties():
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 12, 12), bool)
    masks[0, 2:5, 2:6] = masks[0, 8:10, 8:9] = masks[2, 0:3, 9:12] = masks[3, 5, 5] = True
    for trial in range(3):
        scores = rng.integers(0, 6, size=masks.shape).astype(float) + 2.0 * masks * rng.random(masks.shape) * trial
        assert aupro(scores, masks) == pytest.approx(brute_aupro(scores, masks), abs=1e-12)
    fpr, pro = pro_curve(scores, masks)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-12) and pro[-1] == pytest.approx(1.0)


def test_pixel_metrics_refuse_masks_without_both_kinds_of_pixel():
    with pytest.raises(VaekitError, match="both defective and normal"):
        aupro(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), bool))
    with pytest.raises(VaekitError, match="must be the same"):
        pixel_auroc(np.zeros((1, 2, 2)), np.zeros((1, 3, 2), bool))


# --- conformal p-values and Benjamini-Hochberg ----------------------------------------------------------------------


def test_conformal_p_values_by_hand_and_valid_for_exchangeable_normals():
    assert conformal_p_values(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 5.0])).tolist() == [1.0, 0.75, 0.25]
    rng = np.random.default_rng(1)
    shares = []
    for _ in range(400):
        calibration, fresh = rng.normal(size=99), rng.normal(size=50)
        shares.append((conformal_p_values(calibration, fresh) <= 0.1).mean())
    assert np.mean(shares) <= 0.1 + 0.01  # P(p <= a) <= a, here exactly 10/100
    assert np.mean(shares) > 0.08


def test_benjamini_hochberg_by_hand_and_its_false_discovery_rate():
    # m = 4, fdr 0.1: sorted 0.01 <= 0.025, 0.03 <= 0.05, 0.04 <= 0.075, 0.2 > 0.1
    assert benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.2]), 0.1).tolist() == [True, True, True, False]
    assert benjamini_hochberg(np.array([0.5, 0.6]), 0.1).tolist() == [False, False]
    rng = np.random.default_rng(2)
    proportions = []
    for _ in range(300):
        calibration = rng.normal(size=199)
        normal, anomalous = rng.normal(size=80), rng.normal(3.0, size=20)
        flags = benjamini_hochberg(conformal_p_values(calibration, np.r_[normal, anomalous]), 0.2)
        proportions.append(flags[:80].sum() / max(1, flags.sum()))
    assert np.mean(proportions) <= 0.2 * 0.8 + 0.03  # BH's bound: fdr * (share of normal images)


# --- maps -------------------------------------------------------------------------------------------------------------


def test_blur_keeps_flat_maps_flat_and_spreads_a_point_symmetrically():
    flat = torch.full((2, 9, 7), 3.0)
    assert torch.allclose(blur(flat, 1.5), flat)
    point = torch.zeros(1, 9, 9)
    point[0, 4, 4] = 1.0
    out = blur(point, 1.0)
    assert out.sum() == pytest.approx(1.0, abs=1e-5) and out[0, 4, 4] == out.max()
    assert torch.allclose(out[0], out[0].T) and torch.allclose(out[0], out[0].flip(0))
    assert torch.equal(blur(point, 0.0), point)
    assert blur(torch.rand(1, 2, 3), 4.0).shape == (1, 2, 3)  # narrower than the kernel


def test_image_scores_by_hand():
    m = torch.arange(100.0).reshape(1, 10, 10)
    s = image_scores(m, 0.05)
    assert s["max"].item() == 99 and s["top"].item() == pytest.approx(97.0) and s["mean"].item() == pytest.approx(49.5)


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
def test_the_nll_map_sums_to_the_recon_score_under_every_likelihood(likelihood):
    from vaekit.evaluation.scores import model_scores

    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="vae", image_shape=(1, 8, 8), latent_dim=3, hidden=(16,),
                                    likelihood=likelihood)).eval()
    x = torch.rand(5, 1, 8, 8)
    maps = anomaly_maps(model, x)
    assert set(maps) == set(maps_available(model)) == {"error", "nll", "gradient"}
    recon = model_scores(model, x, 0, None)[0]["recon"]
    assert torch.allclose(maps["nll"].double().sum((1, 2)), recon.double(), rtol=1e-4)
    assert all(m.shape == (5, 8, 8) for m in maps.values()) and (maps["gradient"] >= 0).all()


def test_the_gradient_map_is_the_bounds_derivative_and_an_ae_has_none():
    torch.manual_seed(0)
    ae = build_model(ModelConfig(kind="ae", image_shape=(1, 6, 6), latent_dim=2, hidden=(8,))).eval()
    assert maps_available(ae) == ["error", "nll"] and set(anomaly_maps(ae, torch.rand(2, 1, 6, 6))) == {"error", "nll"}
    vae = build_model(ModelConfig(kind="vae", image_shape=(1, 6, 6), latent_dim=2, hidden=(8,))).double().eval()
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)  # double: a finite difference of a bound of tens of nats
    torch.manual_seed(3)
    grad = anomaly_maps(vae, x)["gradient"]
    from vaekit.models.objectives import elbo

    def bound(image):  # the same draw of q(z|x) each time: a finite difference of the bound along one pixel
        torch.manual_seed(3)
        loss = elbo(vae, image)
        return (loss.recon + loss.kl).item()

    step = torch.zeros_like(x)
    step[0, 0, 2, 3] = 1e-5
    slope = (bound(x + step) - bound(x - step)) / 2e-5
    assert abs(slope) == pytest.approx(grad[0, 2, 3].item(), rel=1e-3, abs=1e-6)


def test_a_conditional_model_is_mapped_under_the_class_that_explains_best():
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="vae", image_shape=(1, 6, 6), latent_dim=2, hidden=(8,), conditional=True,
                                    classes=3)).eval()
    from vaekit.evaluation.maps import best_labels

    x = torch.rand(4, 1, 6, 6)
    labels = best_labels(model, x)
    per_class = torch.stack([model.likelihood.nll(x, model.decode(model.encode(x, y).mean, y)) for y in
                             (torch.full((4,), c) for c in range(3))])
    assert labels.tolist() == per_class.argmin(0).tolist()
    assert torch.allclose(anomaly_maps(model, x)["nll"].sum((1, 2)), per_class.min(0).values, rtol=1e-4)


# --- synthetic defects and inspection data ----------------------------------------------------------------------------


def test_every_defect_is_exact_reproducible_and_changes_only_its_mask():
    data = load_dataset(DataConfig(name="digits"))
    images = data.test.images.permute(0, 2, 3, 1).numpy()
    for kind in KINDS:
        made = defect(images[0], images[1], kind, [0, 0, 1])
        assert made is not None, kind
        out, mask = made
        again = defect(images[0], images[1], kind, [0, 0, 1])
        assert np.array_equal(out, again[0]) and np.array_equal(mask, again[1])
        changed = np.abs(out.astype(int) - images[0].astype(int)).max(-1)
        assert (changed[mask] > CHANGED).all() and (changed[~mask] == 0).all() and mask.any()


def test_a_flat_image_gets_no_invisible_defect():
    flat = np.zeros((8, 8, 1), np.uint8)
    assert defect(flat, flat, "missing", [0]) is None  # background on background changes nothing
    assert defect(flat, flat, "blob", [0]) is not None


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    counts = write_benchmark(load_dataset(DataConfig(name="digits")), root, list(KINDS), 200, 6, seed=0, quiet=True)
    return root, counts


def test_the_benchmark_reads_back_as_mvtec_data_with_its_masks(bench):
    root, counts = bench
    data = load_dataset(DataConfig(name=f"mvtec:{root}"))
    assert data.classes[0] == "good" and sorted(data.classes[1:]) == sorted(KINDS)
    assert len(data.train) + len(data.val) == counts["train/good"] and len(data.test) == sum(
        n for folder, n in counts.items() if folder.startswith("test/"))
    labels, masks = data.test.labels, data.test.masks
    assert not masks[labels == 0].any() and masks[labels > 0].flatten(1).any(1).all()
    for i in torch.nonzero(labels > 0).flatten()[:5].tolist():  # each mask is its file's
        file = root / "ground_truth" / data.classes[labels[i]] / (root / data.test.names[i]).name.replace(
            ".png", "_mask.png")
        assert np.array_equal(np.asarray(Image.open(file)) > 0, masks[i].numpy())


def copy_layout(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_broken_masks_are_refused_in_one_line(bench, tmp_path):
    root = copy_layout(bench[0], tmp_path / "b")
    mask = root / "ground_truth" / "blob" / "0000_mask.png"
    grey = np.asarray(Image.open(mask)).copy()
    grey[0, 0] = 128
    Image.fromarray(grey).save(mask)
    with pytest.raises(VaekitError, match="not a binary mask"):
        load_dataset(DataConfig(name=f"mvtec:{root}"))
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(mask)
    with pytest.raises(VaekitError, match="a mask has its image's size"):
        load_dataset(DataConfig(name=f"mvtec:{root}"))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mask)
    with pytest.raises(VaekitError, match="marks no pixel"):
        load_dataset(DataConfig(name=f"mvtec:{root}"))
    mask.unlink()
    with pytest.raises(VaekitError, match="without a mask"):
        load_dataset(DataConfig(name=f"mvtec:{root}"))
    with pytest.raises(VaekitError, match="neither the MVTec AD layout"):
        load_dataset(DataConfig(name=f"mvtec:{root / 'test'}"))


def test_the_folder_layout_with_palette_masks_and_an_upscaled_size(bench, tmp_path):
    src, root = bench[0], tmp_path / "folders"
    (root / "normal").mkdir(parents=True)
    for f in sorted((src / "train" / "good").iterdir())[:40]:
        (root / "normal" / f.name).write_bytes(f.read_bytes())
    for kind in ("scratch", "noise"):
        (root / "abnormal" / kind).mkdir(parents=True)
        (root / "masks" / kind).mkdir(parents=True)
        for f in sorted((src / "test" / kind).iterdir()):
            (root / "abnormal" / kind / f.name).write_bytes(f.read_bytes())
            palette = Image.open(src / "ground_truth" / kind / f.name.replace(".png", "_mask.png")).convert("P")
            palette.save(root / "masks" / kind / f.name)  # named as its image, a palette image
    data = load_dataset(DataConfig(name=f"mvtec:{root}", image_size=16))
    assert data.classes == ["good", "noise", "scratch"] and data.shape == (1, 16, 16)
    assert (data.test.labels == 0).sum() == round(40 * 0.1) and data.test.masks.shape[1:] == (16, 16)
    big = data.test.masks[data.test.labels > 0]
    assert big.flatten(1).any(1).all()  # nearest-neighbour upscaling keeps every mask binary and non-empty


def test_defects_then_inspect_end_to_end(bench, tmp_path, cli):
    root = tmp_path / "bm"
    made = cli("defects", "--data", "digits", "--out", root, "--train-images", "300", "--test-images", "8",
               "--kinds", "blob,noise", "--quiet")
    assert "test/blob: 8" in made.stdout and (root / "README.md").is_file()
    cli("train", "--data", f"mvtec:{root}", "--model", "vae", "--epochs", "2", "--out", tmp_path / "run", "--quiet")
    out = tmp_path / "insp"
    shown = cli("inspect", tmp_path / "run", "--out", out, "--smooth", "0.5", "--quiet")
    assert "pixel AUROC" in shown.stdout and "Benjamini-Hochberg" in shown.stdout
    from vaekit.evaluation.results import InspectionReport

    m = InspectionReport.from_json(json.loads((out / "metrics.json").read_text()))
    assert m.maps == ["error", "nll", "gradient"] and set(m.types) == {"blob", "noise"}
    assert all(0 <= v.aupro <= 1 and 0 <= v.pixel_auroc <= 1 for v in m.overall.values())
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["score"] == "nll_top" and len(calibration["held_out"]["nll_top"]) == m.decisions.held_out
    rows = (out / "images.csv").read_text().splitlines()
    assert len(rows) == 1 + 24 and rows[0].startswith("index,type,file,defective,error_max")
    page = (out / "report.html").read_text()
    assert "Heatmaps of the nll map" in page and "worst misses" in page and "data:image/png" in page
    refused = cli("inspect", tmp_path / "run", "--data", "digits", "--out", tmp_path / "x", check=False)
    assert refused.returncode == 2 and "no masks" in refused.stderr and not (tmp_path / "x").exists()
    bad = cli("inspect", tmp_path / "run", "--by", "nll_median", check=False)
    assert bad.returncode == 2 and "expected one of" in bad.stderr


def test_an_ae_refuses_the_gradient_map_as_its_decision_score(bench, tmp_path, cli):
    root, _ = bench
    cli("train", "--data", f"mvtec:{root}", "--model", "ae", "--epochs", "1", "--out", tmp_path / "ae", "--quiet")
    refused = cli("inspect", tmp_path / "ae", "--by", "gradient_top", "--out", tmp_path / "y", check=False)
    assert refused.returncode == 2 and "no gradient map" in refused.stderr and not (tmp_path / "y").exists()


def test_the_scoring_graph_carries_the_decision_and_matches_pytorch(bench, tmp_path, cli):
    import onnxruntime as ort

    root, _ = bench
    cli("train", "--data", f"mvtec:{root}", "--model", "vae", "--epochs", "1", "--out", tmp_path / "run", "--quiet")
    cli("inspect", tmp_path / "run", "--out", tmp_path / "insp", "--smooth", "1", "--by", "error_top", "--quiet")
    calibration = tmp_path / "insp" / "calibration.json"
    made = cli("export", tmp_path / "run", "--scoring", calibration, "--out", tmp_path / "exp")
    assert "scoring ONNX" in made.stdout and "0 flags differ" in made.stdout
    assert "## Scoring graph" in (tmp_path / "exp" / "README.md").read_text()
    data = load_dataset(DataConfig(name=f"mvtec:{root}"))
    x = data.test.images[:20].float().numpy() / 255
    heat, score, p_value, flag = ort.InferenceSession(str(tmp_path / "exp" / "scoring.onnx")).run(None, {"image": x})
    chosen = json.loads(calibration.read_text())
    held = np.array(chosen["held_out"]["error_top"])
    assert heat.shape == (20, 8, 8) and np.array_equal(flag, score > chosen["threshold"])
    assert np.allclose(p_value, conformal_p_values(held, score), atol=1e-6)  # the p-value is the library's
    rows = (tmp_path / "insp" / "images.csv").read_text().splitlines()
    header = rows[0].split(",")
    csv_scores = np.array([float(r.split(",")[header.index("error_top")]) for r in rows[1:21]])
    assert np.allclose(score, csv_scores, rtol=1e-4, atol=1e-6)  # the same maps, smoothing and score as inspect's
    other = tmp_path / "other.json"
    other.write_text(calibration.read_text().replace(chosen["model_sha1"], "0" * 40))
    refused = cli("export", tmp_path / "run", "--scoring", other, "--out", tmp_path / "exp2", check=False)
    assert refused.returncode == 2 and "calibrated for another model" in refused.stderr
    other.write_text(calibration.read_text().replace('"fdr": 0.1', '"fdr": "x"'))
    refused = cli("export", tmp_path / "run", "--scoring", other, "--out", tmp_path / "exp2", check=False)
    assert refused.returncode == 2 and "fdr" in refused.stderr and not (tmp_path / "exp2").exists()


def test_a_small_defect_survives_a_smaller_image_size(tmp_path):
    """A 2x2 defect on a 64x64 image read at 16x16 keeps a defective pixel (nearest-neighbour shrinking would drop
    it, and the image would be scored as normal)."""
    rng = np.random.default_rng(0)
    for folder in ("normal", "abnormal/dent", "masks/dent"):
        (tmp_path / folder).mkdir(parents=True)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "normal" / f"{i}.png")
    for i, (y, x) in enumerate([(31, 33), (5, 58)]):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "abnormal/dent" / f"{i}.png")
        mask = np.zeros((64, 64), np.uint8)
        mask[y:y + 2, x:x + 2] = 255
        Image.fromarray(mask).save(tmp_path / "masks/dent" / f"{i}_mask.png")
    data = load_dataset(DataConfig(name=f"mvtec:{tmp_path}", image_size=16, resize="stretch"))
    shrunk = data.test.masks[data.test.labels == 1]
    assert len(shrunk) == 2 and all(0 < m.sum() <= 4 for m in shrunk)


def test_too_few_held_out_images_for_benjamini_hochberg_are_said():
    from types import SimpleNamespace

    from vaekit.report.inspect_page import too_few_words

    said = " ".join(too_few_words(SimpleNamespace(held_out=6, fdr=0.1)))
    assert "cannot flag any image" in said and "1/7 = 0.143" in said and "at least 10" in said
    assert too_few_words(SimpleNamespace(held_out=9, fdr=0.1)) == []  # 1/10: the smallest p-value can pass
