"""The report's sample-quality section: every sampler's measures against the real test images, what they are
computed on, and the sentences read from them."""

from __future__ import annotations

import html

from vaekit.evaluation.evaluate import QUALITY_MEASURES, EvalSettings
from vaekit.evaluation.inception import missing_words
from vaekit.evaluation.results import Comparison, SampleQuality
from vaekit.models.presets import PLAIN, VARIATIONAL
from vaekit.models.samplers import DENSITY, OWN, SAMPLERS, label_of
from vaekit.report.words import Section, fmt, label, names_words, ranked_samplers, seed_pair, unlearned


def quality_columns(inception: bool) -> tuple[tuple[str, str, int], ...]:
    return QUALITY_MEASURES if inception else tuple(c for c in QUALITY_MEASURES if c[0] != "inception_fid")


def quality_cells(s: SampleQuality | None, inception: bool) -> str:
    """One sampler's row of sample-quality numbers (KID with its spread over subsets)."""
    cells = []
    for key, _, digits in quality_columns(inception):
        value = s.value(key) if s else None
        spread = f" &plusmn; {s.kid_std:.{digits}f}" if key == "kid" and value is not None else ""
        cells.append(f"<td>{fmt(value, digits)}{spread}</td>")
    return "".join(cells)


def quality_section(m: Comparison, settings: EvalSettings) -> Section:
    """Every sampler of every model against the real test images, with the real held-out images as the floor."""
    inception = "inception" in m.features
    floor = m.real_floor or (SampleQuality(inception_fid=m.inception_floor) if inception else None)
    if floor is None:
        return "Sample quality", NO_LABELS, []
    rows = []
    for name in m.models:
        samplers = list(m[name].priors)
        for i, sampler in enumerate(samplers):
            first = f"<th rowspan={len(samplers)}>{label(name)}</th>" if i == 0 else ""
            rows.append(f"<tr>{first}<td class=sampler>{html.escape(label_of(sampler))}</td>"
                        f"{quality_cells(m[name].samples.get(sampler), inception)}</tr>")
    rows.append(f"<tr class=floor><th colspan=2>real held-out images (floor)</th>"
                f"{quality_cells(floor, inception)}</tr>")
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in quality_columns(inception))
    table = (f"<table><tr><th>model</th><th>sampler</th>{head}</tr>" + "".join(rows) +
             "</table>" + quality_notes(m, settings))
    return "Sample quality", table, (seed_words(m) if seed_pair(m) else []) + quality_words(m)


NO_LABELS = ("<p>Sample quality is not scored: this data set has no labels of two or more classes to train the "
             "feature classifier on (folders without class subfolders, arrays without y, or every image of one "
             "class). --inception-fid scores samples without labels.</p>")


def quality_notes(m: Comparison, settings: EvalSettings) -> str:
    """What the numbers are computed on, and their sample sizes."""
    notes, held_out = m.features, m.real_floor.images if m.real_floor else "n/a"
    words = []
    if "classifier" in notes:
        c = notes["classifier"]
        words.append(f"Computed on the {c['features']} penultimate features of a small MLP classifier trained on "
                     f"this data set's labels ({100 * c['test_accuracy']:.1f}% test accuracy), not on Inception: "
                     f"comparable between models here, not with published FIDs. Each sampler: {c['samples']} "
                     f"generated images against all {c['real_images']} real test images; the floor: "
                     f"{held_out} real images of the validation split against the same test "
                     f"images. Lower is better for the Frechet distance and KID (the unbiased squared MMD under a "
                     f"cubic kernel, mean &plusmn; std over {c['kid']['subsets']} subsets of {c['kid']['size']}); "
                     f"higher is better for the rest. Precision and density: are the samples where real images are? "
                     f"Recall and coverage: are the real images' neighbourhoods all reached? (k = {c['prdc']['k']} "
                     f"nearest neighbours, on {c['prdc']['real']} real and {c['prdc']['samples']} generated "
                     "images; n/a where a set has too few.)")
    if "inception" in notes:
        i = notes["inception"]
        words.append(f"Inception FID: the standard one ({i['network']}; {i['features']} features), "
                     f"{i['samples']} samples against {i['real_images']} real test images; comparable with "
                     "published tables only for the same number of images and the same reference split.")
    else:
        words.append(html.escape(missing_words()) + ".")
    return "".join(f"<p class=meta>{w}</p>" for w in words)


def seed_words(m: Comparison) -> list[str]:
    """The seed's pair beyond what the answer says: both models with a mixture fitted to their codes, and the feature
    classifier's confidence on each one's prior samples (the answer already gives their Frechet distances)."""
    words = []
    floor = m.real_floor
    if floor is not None:
        a, v = m[PLAIN].samples, m[VARIATIONAL].samples
        if DENSITY in a and DENSITY in v:
            words.append(f"With {m[PLAIN].priors[DENSITY]} instead of N(0, I), the AE scores "
                         f"{fmt(a[DENSITY].frechet)} and the VAE {fmt(v[DENSITY].frechet)} (from N(0, I): "
                         f"{fmt(a[OWN].frechet)} and {fmt(v[OWN].frechet)}, as the answer says).")
        words.append(f"The feature classifier reaches {100 * m.classifier_accuracy:.1f}% test accuracy; its mean "
                     f"confidence is {fmt(v[OWN].confidence, 3)} on VAE-prior samples, "
                     f"{fmt(a[OWN].confidence, 3)} on AE-prior samples and "
                     f"{fmt(floor.test_confidence, 3)} on real test images.")
    return words


ALIKE = 0.5  # samples whose features spread less than this share of real images' are called nearly alike


def alike_words(m: Comparison) -> list[str]:
    """Each model whose own prior's samples are nearly alike, with what that does to precision and recall."""
    words = []
    for name in m.models:
        s = m[name].samples.get(OWN)
        if s is None or s.spread is None or s.spread >= ALIKE:
            continue
        measures = (f": its precision of {fmt(s.precision, 3)} says they lie where real images are, not that they "
                    f"are varied, and its recall of {fmt(s.recall, 3)} and coverage of {fmt(s.coverage, 3)} say how "
                    "little of the data they reach") if s.precision is not None else ""
        words.append(f"{label(name)}'s samples from its own prior are nearly alike (their features spread "
                     f"{fmt(s.spread)} of what real images' do){measures}.")
    return words


INSIDE = 0.9  # a share of codes inside N(0, I)'s 99% ball above which the codes are where the prior's mass is


def lost_words(m: Comparison, lost: list[str]) -> list[str]:
    """Why each model that samples poorly from its own prior does, where its numbers say: codes outside N(0, I)'s
    99% ball; codes inside it while a mixture fitted to them does better (the prior's mass between the codes); or,
    for a prior the ball does not describe, no reason."""
    def sentence(names: list[str], reason: str) -> str:
        one = len(names) == 1
        return (f"{names_words(names)} sample{'s' if one else ''} poorly from {'its' if one else 'their'} own prior "
                f"(more than twice the best distance){reason}.")

    inside = {n: m[n].latent.inside_prior_99 for n in lost}
    outside = [n for n in lost if inside[n] is not None and inside[n] < INSIDE]
    between = [n for n in lost if inside[n] is not None and inside[n] >= INSIDE and DENSITY in m[n].samples
               and m[n].samples[DENSITY].frechet < m[n].samples[OWN].frechet]
    rest = [n for n in lost if n not in outside and n not in between]
    shares = lambda names: ", ".join(f"{label(n)} {100 * inside[n]:.1f}%" for n in names)  # noqa: E731
    words = []
    if outside:
        words.append(sentence(outside, ": the codes are not where the prior puts its mass (inside N(0, I)'s 99% "
                                       f"ball: {shares(outside)})"))
    if between:
        words.append(sentence(between, f", though the codes lie inside N(0, I)'s 99% ball ({shares(between)}): the "
                                       "prior also puts mass between the codes, where the decoder learned nothing, "
                                       "which a mixture fitted to the codes avoids (it samples better)"))
    if rest:
        words.append(sentence(rest, ""))
    return words


def quality_words(m: Comparison) -> list[str]:
    """Which model and sampler generate best, from the Frechet distances."""
    words: list[str] = []
    if m.real_floor is not None:
        scored = ranked_samplers(m)
        best, prior_only = scored[0], [x for x in scored if x[2] == OWN]
        words.append(f"Sample quality: the lowest Frechet distance is {label(best[1])} with its "
                     f"{label_of(best[2])} sampler ({fmt(best[0])}; real images "
                     f"{fmt(m.real_floor.frechet)}). From each model's own prior, {label(prior_only[0][1])} is "
                     f"best ({fmt(prior_only[0][0])}).")
        lost = [n for f, n, _ in prior_only if f > 2 * prior_only[0][0]]
        if lost and not unlearned(m):  # a reason holds only for models that learned codes at all
            words += lost_words(m, lost)
        best_fitted = [min((m[n].samples[f].frechet, f) for f in fitted)[1] for n in m.models
                       if len(fitted := [f for f in SAMPLERS if f in m[n].samples]) > 1]
        if best_fitted:
            counts = ", ".join(f"{label_of(f)} for {best_fitted.count(f)}" for f in SAMPLERS if f in best_fitted)
            words.append(f"Ex-post samplers, the closest to real images per model: {counts} of {len(best_fitted)} "
                         "models.")
        words += alike_words(m)
        own = ", ".join(f"{label(n)} {fmt(s.precision, 3)} / {fmt(s.recall, 3)}" for n in m.models
                        if (s := m[n].samples.get(OWN)) and s.precision is not None)
        floor = m.real_floor
        if own:
            words.append(f"Precision / recall from each model's own prior (are the samples realistic? / do they cover "
                         f"the data's variety?): {own}; real images {fmt(floor.precision, 3)} / "
                         f"{fmt(floor.recall, 3)}.")
    return words
