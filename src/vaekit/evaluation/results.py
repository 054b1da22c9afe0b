"""What an evaluation measured, as typed records: the one contract between the evaluation and everything that shows
it (the CLI's lines, report.html, metrics.json). Each record is a pydantic model: attributes to read, `to_json()` to
write (absent parts left out), `from_json()` to read back with every field checked, and the JSON Schemas that
document the files (`schemas()`, written to docs/*.schema.json).

Units: nats per image; bits/dim (bpd) in bits per pixel value.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1  # metrics.json's layout; a reader refuses a newer one (files without the field are version 0, the
# same layout)


class Record(BaseModel):
    """A typed result: unknown fields refused when read back, optional parts absent (not null) when written."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, by_alias=True)

    @classmethod
    def from_json(cls, data: Any):
        """A record read back, every field checked; a file's record (one with a schema_version) from a newer vaekit
        is refused."""
        if "schema_version" in cls.model_fields and isinstance(data, dict):
            check_version(data.get("schema_version", 0))
        return cls.model_validate(data)


def check_version(version: Any) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= SCHEMA_VERSION:
        raise ValueError(f"schema_version {version!r}: not one this vaekit reads (0 to {SCHEMA_VERSION}; a newer "
                         "vaekit wrote it?)")


class TestLoss(Record):
    """A split's mean loss terms per image, and what a discrete latent's codes use of its codebook."""

    __test__ = False  # a record, not a test class for pytest to collect

    recon: float = Field(description="reconstruction error -log p(x|z), nats per image")
    kl: float = Field(description="the objective's latent term (the KL for a VAE; 0 where there is none), nats")
    loss: float = Field(description="the bound the model trains on (-ELBO, IWAE's k-draw bound, an AE's "
                                    "reconstruction error), nats per image")
    bpd: float = Field(description="`loss` in bits per pixel value")
    images: int
    nelbo: float | None = Field(None, description="recon + KL: the -ELBO, where the posterior has a density")
    codes_used: int | None = Field(None, description="codes of the codebook this split's tokens use (discrete)")
    perplexity: float | None = Field(None, description="exp of the entropy of the codes' frequencies (discrete)")

    @property
    def has_bound(self) -> bool:
        """Whether this is a likelihood bound: the model has a density (a deterministic code bounds nothing)."""
        return self.nelbo is not None


class ImportanceSampled(Record):
    """The importance-sampled negative log-likelihood (Burda et al.) on the first test images."""

    nll: float = Field(description="mean -log p(x) estimate, nats per image")
    bpd: float
    k: int = Field(description="importance samples per image")
    images: int
    stderr: float = Field(description="standard error of the mean over the images")
    nelbo_same_images: float = Field(description="the -ELBO on the same images")
    bound_same_images: float = Field(description="the training bound on the same images")


class Codebook(Record):
    """How much of a discrete latent's codebook the test images use, and the bound under uniformly random codes."""

    size: int
    used: int
    dead: int
    perplexity: float
    code_nats: float = Field(description="a code's length when its tokens are drawn uniformly: tokens x log size")
    uniform_bound: float | None = Field(None, description="-log p(x) <= recon + code_nats, nats per image")


class LatentStatistics(Record):
    """The test codes (posterior means): activity per dimension and its summary, their moments, the KL per dimension
    against a prior with a closed form, the share inside N(0, I)'s 99% ball (for a standard-normal prior)."""

    active_units: int = Field(description="dimensions whose mean's variance over the data exceeds 0.01")
    activity: list[float]
    mean: list[float]
    std: list[float]
    kl_per_dim: list[float] | None = None
    inside_prior_99: float | None = None
    codebook: Codebook | None = None


class ReconstructionQuality(Record):
    """The test images' reconstructions (the decoded posterior mean's mean image, in [0, 1]) against the images."""

    psnr: float = Field(description="peak signal-to-noise ratio, dB, mean over the images")
    ssim: float | None = Field(None, description="structural similarity (11x11 Gaussian window), mean over the "
                                                 "images; absent for images under 6 pixels a side")
    images: int
    mean_image_psnr: float | None = Field(None, description="the PSNR of the training images' mean image against "
                                          "the test images: what a model that learned nothing reaches")
    frechet: float | None = Field(None, description="Frechet distance of the reconstructions of the first test "
                                  "images from the test images, on the feature classifier's features (0: as real)")
    inception_fid: float | None = Field(None, description="rFID: the same on Inception's features (--inception-fid)")
    measured_on: int | None = Field(None, description="the reconstructions the two distances are computed from")


class SampleQuality(Record):
    """Generated images against the real test images, on the feature classifier's features (and Inception's)."""

    frechet: float | None = None
    kid: float | None = None
    kid_std: float | None = None
    precision: float | None = None
    recall: float | None = None
    density: float | None = None
    coverage: float | None = None
    confidence: float | None = Field(None, description="the feature classifier's mean top probability")
    spread: float | None = Field(None, description="the median feature distance between two samples over that between "
                                 "two real test images: about 1 as varied as real images, near 0 near-identical")
    inception_fid: float | None = None
    kid_subsets: int | None = Field(None, description="KID: random subsets it is averaged over")
    kid_size: int | None = Field(None, description="KID: rows of each subset")
    prdc_k: int | None = Field(None, description="precision, recall, density, coverage: the k of the k-NN balls")
    prdc_images: int | None = Field(None, description="the generated images they are computed on")

    def value(self, key: str) -> float | None:
        """A measure by its key in QUALITY_MEASURES (the tables' columns)."""
        return getattr(self, key)


class ClassQuality(Record):
    klass: int = Field(alias="class")
    images: int
    accuracy: float
    frechet: float | None = None


class ConditionalQuality(Record):
    """Images drawn as given classes against those classes: the feature classifier's agreement, per class too."""

    accuracy: float
    images: int
    classes: list[ClassQuality]

    def by_class(self) -> dict[int, ClassQuality]:
        return {row.klass: row for row in self.classes}


class Floor(SampleQuality):
    """The same measures for real held-out images: what samples are compared against."""

    images: int = 0
    test_confidence: float | None = Field(None, description="the classifier's mean confidence on the test images")
    conditional: ConditionalQuality | None = None


class ModelEvaluation(Record):
    """Every number for one model."""

    model: str = Field(description="the preset")
    latent_dim: int
    test: TestLoss
    is_nll: ImportanceSampled | None = None
    latent: LatentStatistics
    reconstruction: ReconstructionQuality | None = None
    priors: dict[str, str] = Field(description="each sampler's description, by sampler name")
    samples: dict[str, SampleQuality] = Field(default_factory=dict, description="by sampler name")
    conditional: dict[str, ConditionalQuality] | None = None
    training_seconds: float | None = None
    training_steps: int | None = Field(None, description="optimisation steps the model was trained for")


class CheckpointEvaluation(ModelEvaluation):
    """`vaekit evaluate --json`: one model's evaluation, the real floor and what the measures are computed on."""

    schema_version: int = SCHEMA_VERSION
    real_floor: Floor | None = None
    features: dict[str, Any] = Field(default_factory=dict)


class Comparison(Record):
    """`vaekit compare`'s metrics.json: the comparison's own fields, and each model's evaluation under its name
    (`results` in Python; in the file, each beside the comparison's fields, keyed by the model's name)."""

    schema_version: int = SCHEMA_VERSION
    models: list[str]
    checkpoints: dict[str, str] = Field(description="each model's run folder, relative to the comparison's")
    data: str
    labels: str
    data_notes: list[str] = Field(default_factory=list)
    quick: bool
    settings: dict[str, Any] = Field(description="the evaluation's settings (EvalSettings)")
    classifier_accuracy: float | None = None
    real_floor: Floor | None = None
    inception_floor: float | None = None
    features: dict[str, Any] = Field(default_factory=dict, description="what the sample-quality numbers are "
                                     "computed on")
    same_networks: bool
    interpolation_confidence: dict[str, float] | None = None
    seconds: float = 0.0
    results: dict[str, ModelEvaluation] = Field(default_factory=dict, exclude=True)

    def __getitem__(self, name: str) -> ModelEvaluation:
        return self.results[name]

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), **{name: r.to_json() for name, r in self.results.items()}}

    @classmethod
    def from_json(cls, data: Any) -> Comparison:
        """A metrics.json read back: its version checked, the models' results under their names."""
        if not isinstance(data, dict):
            raise ValueError("a comparison's metrics are a JSON object")
        check_version(data.get("schema_version", 0))
        names = data.get("models")
        if not isinstance(names, list) or not all(isinstance(n, str) and n in data for n in names):
            raise ValueError("'models' must list the names of the models whose results it holds")
        own = {k: v for k, v in data.items() if k not in names}
        results = {n: ModelEvaluation.from_json(data[n]) for n in names}
        return cls.model_validate({**own, "schema_version": SCHEMA_VERSION, "results": results})

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The file's JSON Schema: the comparison's fields, and any other key a ModelEvaluation."""
        schema = cls.model_json_schema(by_alias=True)
        schema["properties"].pop("results", None)
        schema["additionalProperties"] = {"$ref": "#/$defs/ModelEvaluation"}
        return schema


class Detection(Record):
    """How well a score tells a set (the positives) from the test images (see evaluation/detection.py)."""

    auroc: float
    auprc: float
    fpr_at_95_tpr: float


class ModelReport(Record):
    """What a command's metrics.json about one checkpoint opens with: the layout's version, the model, where it came
    from, the data and what reading it did."""

    schema_version: int = SCHEMA_VERSION
    model: str
    checkpoint: str = ""
    data: str = ""
    notes: list[str] = Field(default_factory=list)


class OodReport(ModelReport):
    """`vaekit ood`'s metrics.json: each score against each OOD set, and the thresholds chosen on validation images."""

    scores: list[str] = Field(description="the scores measured, in order")
    k: int | None = Field(None, description="importance samples per image of the IS-NLL score (a density only)")
    fpr: float = Field(description="the share of validation images a threshold may flag")
    sets: dict[str, dict[str, Detection]] = Field(description="by OOD set, then by score")
    described: dict[str, str] = Field(description="each OOD set in words")
    sizes: dict[str, int] = Field(description="images scored per set (test, val and each OOD set)")
    thresholds: dict[str, float] = Field(description="by score")
    flagged_at_threshold: dict[str, dict[str, float]] = Field(description="by score, then by set: the share flagged")
    best: str = Field(description="the score with the best mean AUROC over the sets")
    means: dict[str, dict[str, float | None]] = Field(description="by set, then by score (null: no finite score)")
    mixture: str | None = Field(None, description="the mixture code_nll scores under")
    likelihood: str
    binarized: bool


class OneClassRow(Record):
    """One class's model, against the classes it did not see."""

    klass: int = Field(alias="class")
    name: str
    run: str = Field(description="its run folder, inside the one-class folder")
    sizes: dict[str, int]
    auroc: dict[str, float] = Field(description="by score")
    detection: dict[str, Detection] = Field(description="by score")
    scores: list[str]


class OneClassReport(Record):
    """`vaekit oneclass`'s metrics.json."""

    schema_version: int = SCHEMA_VERSION
    protocol: str = Field(description="one: each class is the normal one; all-but-one: each class is the anomaly")
    protocol_words: str
    settings_words: str
    data: str
    scores: list[str] = Field(description="the scores every class's model has")
    classes: list[OneClassRow]
    mean_auroc: dict[str, float] = Field(description="by score, over the classes")
    run: dict[str, Any] = Field(description="the run's settings, as a config file holds them")
    seconds: float


class Localization(Record):
    """How one anomaly map finds the defects of a set of test images (evaluation/localization.py)."""

    pixel_auroc: float
    aupro: float = Field(description="per-region overlap integrated to a false-positive rate of 0.3, normalised")
    f1_max: float
    image_auroc: dict[str, float] = Field(description="by image score from the map (max, top)")
    images: int
    defective: int = Field(description="images with a defect in their mask")


class Decisions(Record):
    """The calibrated decisions of one image score: a threshold for a false-positive rate, and conformal p-values
    with Benjamini-Hochberg at a false-discovery rate, both from held-out normal images; and what they achieved."""

    score: str = Field(description="the image score decided on, MAP_SCORE")
    held_out: int = Field(description="normal validation images the threshold and the p-values come from")
    fpr: float = Field(description="the target false-positive rate of the threshold")
    threshold: float
    test_fpr: float = Field(description="the share of the test's normal images above the threshold")
    test_tpr: float = Field(description="the share of the test's defective images above the threshold")
    fdr: float = Field(description="the target false-discovery rate of Benjamini-Hochberg")
    flagged: int = Field(description="test images flagged by Benjamini-Hochberg over the whole test set")
    false_discoveries: int
    batches: int = Field(description="random batches of test images drawn to measure the achieved rates")
    batch_size: int
    mean_fdr: float = Field(description="the mean false-discovery proportion over the mixed batches")
    normal_batches_flagged: float = Field(description="the share of all-normal batches with any image flagged (the "
                                                      "false-discovery rate there; at most fdr)")


class InspectionReport(ModelReport):
    """`vaekit inspect`'s metrics.json: every map against the masks, overall and by defect type."""

    maps: list[str] = Field(description="the maps measured, in order")
    smooth: float = Field(description="sigma of the Gaussian blur of every map, pixels (0: none)")
    top: float = Field(description="the share of a map's pixels whose mean is the `top` image score")
    overall: dict[str, Localization] = Field(description="by map: every test image")
    types: dict[str, dict[str, Localization]] = Field(description="by defect type (with the normal test images), "
                                                                  "then by map")
    best: str = Field(description="the map with the best AUPRO overall")
    decisions: Decisions
    likelihood: str
    seconds_per_image: float = Field(description="time to compute every map of one image")


def schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schemas of the files these records are written to, by their file name under docs/ (kept in step with
    the records by tests/test_results.py)."""
    files = {"compare-metrics": ("vaekit compare: OUT/metrics.json", Comparison.json_schema()),
             "evaluate": ("vaekit evaluate --json FILE", CheckpointEvaluation.model_json_schema(by_alias=True)),
             "ood-metrics": ("vaekit ood: OUT/metrics.json", OodReport.model_json_schema(by_alias=True)),
             "oneclass-metrics": ("vaekit oneclass: OUT/metrics.json", OneClassReport.model_json_schema(by_alias=True)),
             "inspect-metrics": ("vaekit inspect: OUT/metrics.json", InspectionReport.model_json_schema(by_alias=True))}
    return {f"{name}.schema.json": {**schema, "title": title} for name, (title, schema) in files.items()}
