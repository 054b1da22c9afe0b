"""The typed results are metrics.json's schema: what is written reads back equal, a file from a newer vaekit or with
a field that is not in the schema is refused in one line, and the JSON Schemas under docs/ are the records' own."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from vaekit.evaluation.results import SCHEMA_VERSION, Comparison, ModelEvaluation, OodReport, SampleQuality, schemas

DOCS = Path(__file__).resolve().parent.parent / "docs"


def result(name: str, **extra) -> dict:
    return {"model": name, "latent_dim": 2, "priors": {"prior": "N(0, I)"},
            "test": {"recon": 10.0, "kl": 1.0, "loss": 11.0, "bpd": 0.2, "images": 5, **extra},
            "latent": {"active_units": 2, "activity": [0.5, 0.4], "mean": [0.0, 0.1], "std": [1.0, 0.9]},
            "samples": {"prior": {"frechet": 3.5, "kid": 0.01, "kid_std": 0.002}}}


def comparison() -> dict:
    return {"schema_version": SCHEMA_VERSION, "models": ["ae", "vae"], "checkpoints": {"ae": "ae", "vae": "vae"},
            "data": "digits", "labels": "the data's labels", "data_notes": [], "quick": True, "settings": {"k": 100},
            "same_networks": True, "seconds": 9.5, "features": {}, "real_floor": {"frechet": 1.5, "images": 7},
            "ae": result("ae"), "vae": result("vae", nelbo=11.0)}


def test_a_comparison_reads_back_equal_and_typed():
    data = comparison()
    typed = Comparison.from_json(data)
    assert typed.to_json() == data
    assert typed["vae"].test.has_bound and not typed["ae"].test.has_bound
    assert isinstance(typed["ae"].samples["prior"], SampleQuality) and typed["ae"].samples["prior"].value("kid") == 0.01
    assert typed.real_floor.frechet == 1.5 and typed["ae"].is_nll is None


def test_a_file_without_a_version_is_the_first_layout_and_a_newer_one_is_refused():
    old = comparison()
    del old["schema_version"]
    assert Comparison.from_json(old).schema_version == SCHEMA_VERSION
    with pytest.raises(ValueError, match="a newer vaekit wrote it"):
        Comparison.from_json({**comparison(), "schema_version": SCHEMA_VERSION + 1})
    ood = {"model": "vae", "scores": ["recon"], "fpr": 0.05, "sets": {}, "described": {}, "sizes": {}, "thresholds": {},
           "flagged_at_threshold": {}, "best": "recon", "means": {}, "likelihood": "bernoulli", "binarized": False}
    assert OodReport.from_json(ood).schema_version == SCHEMA_VERSION
    for version in (SCHEMA_VERSION + 1, -1, "1", True):  # every file's record checks its version
        with pytest.raises(ValueError, match="schema_version"):
            OodReport.from_json({**ood, "schema_version": version})


@pytest.mark.parametrize("damage", [
    lambda d: d["vae"]["test"].update(recon="many"),  # a number that is not one
    lambda d: d["vae"]["latent"].update(surprise=1),  # a field not in the schema
    lambda d: d["vae"]["test"].pop("images"),  # a required field missing
    lambda d: d.update(models=["ae", "vae", "iwae"]),  # a model listed without results
    lambda d: d.update(models="ae"),
])
def test_a_damaged_file_is_refused(damage):
    data = comparison()
    damage(data)
    with pytest.raises(ValueError):
        Comparison.from_json(data)


def test_optional_parts_are_left_out_not_null():
    written = ModelEvaluation.from_json(result("ae")).to_json()
    assert "is_nll" not in written and "conditional" not in written and "nelbo" not in written["test"]
    assert "codebook" not in written["latent"]


def test_assignment_is_checked_too():
    typed = ModelEvaluation.from_json(result("ae"))
    with pytest.raises(ValidationError):
        typed.latent_dim = "two"


def test_the_documented_schemas_are_the_records_own():
    for name, schema in schemas().items():
        assert json.loads((DOCS / name).read_text()) == schema, (
            f"docs/{name} is stale: python -c \"import json; from vaekit.evaluation.results import schemas; "
            "[open('docs/' + n, 'w').write(json.dumps(s, indent=2) + '\\n') for n, s in schemas().items()]\"")
