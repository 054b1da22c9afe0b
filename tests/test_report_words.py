"""The report's first screen and its lessons are sentences read from the numbers: each claim appears when the numbers
support it, and its opposite when they do not."""

import torch

from vaekit.data import Dataset, TensorImages
from vaekit.evaluation.results import Comparison
from vaekit.report.answer import answer_words, lessons_section, poor_words, vae_wins


def typed(m: dict) -> Comparison:
    """The numbers a test gives, filled out with the fields the sentences do not read, as the typed results the
    pages take (validated as metrics.json is read back)."""
    results = {}
    for name in m["models"]:
        r = m[name]
        test = {"kl": 0.0, "bpd": 0.0, "images": 100, "loss": r["test"]["recon"], **r["test"]}
        latent = {"activity": [], "mean": [0.0] * len(r["latent"]["std"]), **r["latent"]}
        results[name] = {"model": name, "latent_dim": len(latent["std"]), **r, "test": test, "latent": latent}
    own = {"checkpoints": {}, "data": "toy", "labels": "toy labels", "quick": True, "settings": {},
           "same_networks": True, **{k: v for k, v in m.items() if k in Comparison.model_fields}}
    return Comparison.from_json({**own, **results})


def metrics(ae_prior=180.0, ae_gmm=1.4, vae_prior=48.0, vae_gmm=4.1, floor=0.19, interp=(0.80, 0.70), active=17):
    def model(prior, gmm, inside, recon, units):
        return {"samples": {"prior": {"frechet": prior}, "gmm": {"frechet": gmm}}, "test": {"recon": recon},
                "priors": {"prior": "N(0, I)", "gmm": "a mixture fitted to its codes"},
                "latent": {"inside_prior_99": inside, "active_units": units, "std": [1.0] * 20}}

    vae = model(vae_prior, vae_gmm, 0.999, 228.6, active)
    vae["test"]["nelbo"] = 241.0  # the VAE has a density; the AE does not
    return {"models": ["ae", "vae"], "ae": model(ae_prior, ae_gmm, 0.022, 215.7, 20), "vae": vae,
            "real_floor": {"frechet": floor},
            "interpolation_confidence": {"ae": interp[0], "vae": interp[1]}}


def data(labelled: bool = True) -> Dataset:
    images = TensorImages(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4) if labelled else None)
    return Dataset("toy", images, images, images)


def test_the_answer_says_what_the_numbers_say():
    words = " ".join(answer_words(typed(metrics()), data()))
    assert "are closer to real images than the AE's" in words and "VAE 48.00, AE 180.00" in words
    assert "99.9% of its test codes" in words and "2.2% of its codes" in words and "coloured by class" in words
    reversed_run = " ".join(answer_words(typed(metrics(ae_prior=40.0)), data(labelled=False)))
    assert "are not closer to real images than the AE's" in reversed_run and "coloured by class" not in reversed_run


def test_the_contradictions_are_explained_only_when_they_show():
    _, _, words = lessons_section(typed(metrics()))
    assert len(words) == 3
    assert "best generator here is the AE sampled from a mixture fitted to its codes" in words[0]
    assert "11.7 times further" in words[1] and "3 of its 20 dimensions are inactive" in words[1]
    assert "AE's interpolations score a higher classifier confidence" in words[2]
    assert lessons_section(typed(metrics(ae_gmm=60.0, vae_gmm=45.0, interp=(0.6, 0.7)))) is None  # the simple story


def test_poor_samples_and_unmeasured_samples_are_said_plainly():
    assert poor_words(typed(metrics(vae_prior=1.5))) == []
    assert "Closer is not close" in poor_words(typed(metrics()))[0]  # the VAE wins, at 48 against real images' 0.19
    assert vae_wins(typed(metrics())) and not vae_wins(typed(metrics(ae_prior=40.0)))  # it claims what was shown
    poor = " ".join(poor_words(typed(metrics(ae_gmm=90.0, vae_gmm=80.0, ae_prior=300.0, vae_prior=200.0, floor=2.0))))
    assert "Even the best samples are far from real images" in poor and "80.00" in poor
    assert "judge the grids with your own eyes" in " ".join(poor_words(typed({**metrics(), "real_floor": None})))


def test_discrete_codes_get_their_uniform_code_bound_and_the_rest_none():
    """A model with a codebook is bounded by reconstruction + the code's length; a plain deterministic one has no
    bound; the sentence ranks the bounds."""
    from vaekit.report.page import family_words

    m = metrics()
    m["models"] = ["ae", "vae", "vqvae"]
    m["vqvae"] = {**m["ae"], "test": {"recon": 200.0},
                  "latent": {**m["ae"]["latent"], "codebook": {"size": 512, "used": 300, "dead": 212,
                                                                "perplexity": 250.0, "code_nats": 49 * 6.238,
                                                                "uniform_bound": 200 + 49 * 6.238}}}
    words = " ".join(family_words(typed(m)))
    assert "AE and VQ-VAE define no density (deterministic codes), so they have no ELBO" in words
    assert f"uniformly random codes: -log p(x) <= reconstruction + the code's length (tokens x log codebook size): " \
           f"VQ-VAE {200 + 49 * 6.238:.2f} nats" in words
    m["models"] = ["ae", "vae"]
    assert "uniformly random codes" not in " ".join(family_words(typed(m)))


def test_a_model_far_better_sampled_through_a_fitted_sampler_shows_that_grid_too():
    """Outside the seed's pair, each model's grid from its own prior, and from a fitted sampler only where that comes
    far closer to real images (under half the Frechet distance)."""
    from vaekit.report.answer import shown_grids

    m = metrics()
    m["models"] = ["vae", "vqvae"]
    m["vqvae"] = {**m["ae"], "samples": {"prior": {"frechet": 110.0}, "gmm": {"frechet": 80.0},
                                         "code-prior": {"frechet": 31.0}}}
    assert shown_grids(typed(m)) == [("vae", "prior"), ("vae", "gmm"), ("vqvae", "prior"), ("vqvae", "code-prior")]
    m["vqvae"]["samples"]["code-prior"]["frechet"] = 60.0  # closer, not far closer
    m["vae"]["samples"]["gmm"]["frechet"] = 30.0
    assert shown_grids(typed(m)) == [("vae", "prior"), ("vqvae", "prior")]


def test_a_model_that_did_not_learn_is_said_first_and_no_story_is_told_over_it():
    """A collapsed VAE (no active dimension) or reconstructions no better than the mean image: the page opens with
    that and what to do, not with the seed's story; the lessons and the reasons are left out. A model that learned
    gets none of it."""
    from vaekit.report.answer import learned_words
    from vaekit.report.page import family_words
    from vaekit.report.quality import quality_words
    from vaekit.report.words import unlearned

    good = metrics()
    for name, psnr in (("ae", 18.0), ("vae", 16.0)):
        good[name]["reconstruction"] = {"psnr": psnr, "images": 100, "mean_image_psnr": 11.0}
        good[name]["training_steps"] = 4690
    assert unlearned(typed(good)) == {}
    assert lessons_section(typed(good)) is not None

    bad = metrics(active=0)  # the VAE's posterior collapsed
    bad["vae"]["reconstruction"] = {"psnr": 11.4, "images": 100, "mean_image_psnr": 11.0}
    bad["vae"]["training_steps"] = bad["ae"]["training_steps"] = 24
    failed = unlearned(typed(bad))
    assert list(failed) == ["vae"] and len(failed["vae"]) == 2
    collapsed, no_better = failed["vae"].values()
    assert "none of its 20 latent dimensions is active" in collapsed
    assert "no better than the training images' mean image (11.00 dB)" in no_better
    words = " ".join(learned_words(typed(bad), failed))
    assert "24 optimisation steps is few" in words and "--kl-warmup-epochs" in words and "--free-bits" in words
    assert lessons_section(typed(bad)) is None
    assert not any("codes are not where the prior puts its mass" in w for w in quality_words(typed(bad)))
    assert not any("Deterministic codes carry more" in w for w in family_words(typed(bad)))


def test_near_identical_samples_are_said_beside_their_precision():
    """Precision 1.000 on a set of one blob is no sign of realism: the spread says so, and only where it is low."""
    from vaekit.report.quality import alike_words

    blob = metrics()
    blob["vae"]["samples"]["prior"].update(spread=0.08, precision=1.0, recall=0.02, coverage=0.05)
    words = " ".join(alike_words(typed(blob)))
    assert "VAE's samples from its own prior are nearly alike" in words and "0.08" in words
    assert "precision of 1.000 says they lie where real images are, not that they are varied" in words
    varied = metrics()
    varied["vae"]["samples"]["prior"].update(spread=0.95, precision=1.0, recall=0.6, coverage=0.7)
    assert alike_words(typed(varied)) == [] and alike_words(typed(metrics())) == []  # unmeasured: nothing said


def test_spread_is_zero_for_identical_samples_and_about_one_for_real_ones():
    from vaekit.evaluation.metrics import spread

    rng = torch.Generator().manual_seed(0)
    real, other = torch.randn(400, 16, generator=rng), torch.randn(400, 16, generator=rng)
    assert abs(spread(real, other) - 1.0) < 0.05
    assert spread(real, real[:1].repeat(50, 1)) == 0.0
    assert spread(real, 0.1 * other) < 0.15  # samples gathered in a small region


def test_a_model_sampling_poorly_gets_only_the_reason_its_numbers_show():
    from vaekit.report.quality import quality_words

    outside = " ".join(quality_words(typed(metrics())))  # the AE: 180 against 48, 2.2% of codes inside the ball
    assert "AE samples poorly from its own prior" in outside and "not where the prior puts its mass" in outside
    assert "AE 2.2%" in outside
    inside = metrics(ae_prior=40.0, vae_prior=180.0, vae_gmm=5.0)  # the VAE's codes: 99.9% inside, its mixture better
    words = " ".join(quality_words(typed(inside)))
    assert "VAE samples poorly" in words and "though the codes lie inside N(0, I)'s 99% ball (VAE 99.9%)" in words
    assert "not where the prior puts its mass" not in words
    neither = metrics(ae_prior=40.0, vae_prior=180.0, vae_gmm=200.0)  # inside the ball, and no mixture does better
    plain = " ".join(quality_words(typed(neither)))
    assert "VAE samples poorly from its own prior (more than twice the best distance)." in plain
    assert "puts its mass" not in plain and "though" not in plain


def test_png_length_is_called_far_from_chance_only_for_the_classes_where_it_is():
    from vaekit.evaluation.results import OneClassReport
    from vaekit.report.ood_page import png_words

    def report(png: list[float]) -> OneClassReport:
        rows = [{"class": i, "name": f"c{i}", "run": f"class-{i}", "sizes": {}, "scores": ["recon", "png_bits"],
                 "auroc": {"recon": 0.8, "png_bits": v}, "detection": {}} for i, v in enumerate(png)]
        return OneClassReport.model_validate({"protocol": "one", "protocol_words": "", "settings_words": "",
                                              "data": "toy", "scores": ["recon", "png_bits"], "classes": rows,
                                              "mean_auroc": {"recon": 0.8, "png_bits": sum(png) / len(png)},
                                              "run": {}, "seconds": 1.0})

    both = png_words(report([0.9, 0.1, 0.5]))
    assert "(mean 0.500)" in both and "Far above 0.5 for c0" in both and "Far below 0.5 for c1" in both
    assert "both ways" in both and "c2" not in both.split("mean")[1]
    flat = png_words(report([0.48, 0.51]))
    assert "Near 0.5 for every class" in flat and "Far" not in flat


def test_the_complexity_inversion_is_explained_by_irregular_images_only_where_they_are():
    from vaekit.evaluation.results import OodReport
    from vaekit.report.ood_page import units_words

    def report(png_ood: float, complexity: float = 0.2, likelihood: str = "bernoulli") -> OodReport:
        d = {"auroc": complexity, "auprc": 0.5, "fpr_at_95_tpr": 0.9}
        return OodReport.model_validate({
            "model": "vae", "scores": ["recon", "complexity", "png_bits"], "fpr": 0.05,
            "sets": {"other": {"recon": {**d, "auroc": 0.9}, "complexity": d, "png_bits": {**d, "auroc": 0.5}}},
            "described": {"other": "another set"}, "sizes": {"test": 10, "val": 10, "other": 10},
            "thresholds": {"recon": 1.0}, "flagged_at_threshold": {"recon": {"test": 0.05, "other": 0.5}},
            "best": "recon", "means": {"test": {"png_bits": 1000.0}, "other": {"png_bits": png_ood}},
            "likelihood": likelihood, "binarized": False})

    noisy = " ".join(units_words(report(png_ood=5000.0)))
    assert "mixes two units" in noisy and "compresses worse than the test images as PNG (5000 bits" in noisy
    simpler = " ".join(units_words(report(png_ood=400.0)))
    assert "mixes two units" in simpler and "compress" not in simpler.split("mixes two units")[1]
    assert units_words(report(png_ood=5000.0, complexity=0.8)) == []  # no inversion: nothing to explain
    assert units_words(report(png_ood=5000.0, likelihood="logistic-mixture")) == []  # a code length: the units agree
