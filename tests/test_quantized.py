"""Discrete and spatial codes: the quantized latents (vqvae, fsq), codes laid out as a grid, and the PixelCNN prior over
code indices. The contracts over every preset and every latent (test_presets.py, test_posterior.py) cover shapes,
saving, gradients and compilation; here is what is particular to them."""

import math

import pytest
import torch

from vaekit import ModelConfig, build_model
from vaekit.errors import VaekitError
from vaekit.evaluation.metrics import codebook_usage
from vaekit.models.code_prior import MAX_VOCAB, code_prior_from_tensors, fit_code_prior, vocabulary
from vaekit.models.networks import GridInput


def codes_from(indices: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """Codes (N, C*h*w) whose tokens are the rows of `book` at `indices` (N, h, w)."""
    return book[indices].permute(0, 3, 1, 2).reshape(len(indices), -1)


def test_the_vocabulary_is_read_off_the_codes_and_continuous_codes_are_refused():
    book = torch.randn(5, 2)
    indices = torch.randint(5, (40, 2, 3), generator=torch.Generator().manual_seed(0))
    codes = codes_from(indices, book)
    vocab, found = vocabulary(codes, (2, 2, 3))
    assert len(vocab) <= 5 and torch.equal(codes_from(found, vocab), codes)
    with pytest.raises(ValueError, match="not discrete"):
        vocabulary(torch.randn(MAX_VOCAB + 1, 2), (2, 1, 1))


def test_the_code_prior_looks_only_at_the_tokens_before_each_one():
    """What drawing token by token relies on: the logits at a position do not move when that token or any after it
    (raster order) changes, and do move when one before it does."""
    g = torch.Generator().manual_seed(0)
    book, grid = torch.randn(6, 2), (2, 3, 4)
    prior = fit_code_prior(codes_from(torch.randint(6, (20, 3, 4), generator=g), book), 0, 0, grid)  # untrained
    tokens = torch.randint(len(prior.vocab), (1, 3, 4), generator=g)
    base = prior.logits(tokens)
    for t in range(12):
        later = tokens.clone().flatten()
        later[t:] = (later[t:] + 1 + torch.randint(4, (12 - t,), generator=g)) % len(prior.vocab)
        torch.testing.assert_close(prior.logits(later.reshape(1, 3, 4))[..., t // 4, t % 4],
                                   base[..., t // 4, t % 4], rtol=0, atol=1e-5)
    earlier = tokens.clone()
    earlier[0, 1, 3] = (earlier[0, 1, 3] + 1) % len(prior.vocab)
    assert not torch.allclose(prior.logits(earlier)[..., 2, 3], base[..., 2, 3])


def test_the_code_prior_learns_what_uniform_codes_miss():
    """Codes whose four tokens are always the same one of three: the fitted PixelCNN draws such codes almost always
    (uniformly random tokens would, 1 time in 27), each of the three about as often."""
    g = torch.Generator().manual_seed(0)
    book = torch.randn(3, 2)
    which = torch.randint(3, (300, 1, 1), generator=g).expand(300, 2, 2)
    prior = fit_code_prior(codes_from(which, book), 40, 0, (2, 2, 2), batch=64, lr=3e-3)
    drawn = prior.sample(600, torch.Generator().manual_seed(1))
    _, tokens = vocabulary(torch.cat([codes_from(which[:1], book), drawn]), (2, 2, 2))  # the same vocabulary order
    same = (tokens[1:].flatten(1) == tokens[1:, :1, 0]).all(1)
    assert same.float().mean() > 0.9, same.float().mean()
    shares = torch.bincount(tokens[1:, 0, 0], minlength=3).float() / 600
    assert shares.min() > 0.2, shares


def test_a_code_prior_read_back_is_checked():
    book = torch.randn(4, 2)
    codes = codes_from(torch.randint(4, (30, 2, 2), generator=torch.Generator().manual_seed(0)), book)
    good = fit_code_prior(codes, 1, 0, (2, 2, 2)).tensors()
    assert code_prior_from_tensors(dict(good), (2, 2, 2), "f").sample(3).shape == (3, 8)
    bad = {"another layout": ({**good}, (3, 2, 2)),
           "not finite": ({**good, "embed": good["embed"] * math.nan}, (2, 2, 2)),
           "a missing layer": ({k: v for k, v in good.items() if k != "bias1"}, (2, 2, 2)),
           "an even kernel": ({**good, "weight1": good["weight1"][..., :2, :2]}, (2, 2, 2)),
           "logits over another vocabulary": ({**good, "vocab": good["vocab"][:2]}, (2, 2, 2))}
    for what, (tensors, grid) in bad.items():
        with pytest.raises(ValueError, match="^f: the code prior"):
            code_prior_from_tensors(tensors, grid, "f")
            pytest.fail(what)


def test_codebook_usage_by_hand():
    assert codebook_usage(torch.tensor([[0, 0], [1, 1]]), 4) == {"size": 4, "used": 2, "dead": 2, "perplexity": 2.0}
    quarter = codebook_usage(torch.tensor([0, 0, 0, 1]), 3)
    assert quarter["used"] == 2 and quarter["perplexity"] == pytest.approx(math.exp(-(0.75 * math.log(0.75)
                                                                                      + 0.25 * math.log(0.25))))


def test_a_codebook_moves_in_training_steps_only():
    """The EMA codebook learns in a training step, as batch norm's statistics do, and never when codes are read:
    under no_grad (validation, sampler fits) or in eval mode."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="vqvae", image_shape=(1, 8, 8), arch="mlp", latent_channels=2,
                                    latent_dim=8, codebook_size=16))
    x, other = torch.rand(32, 1, 8, 8), torch.rand(32, 1, 8, 8) ** 2  # a batch the k-means centres do not fit
    model(x)  # the first step initialises the codebook by k-means on the batch
    book = model.latent.quantizer.codebook.clone()
    with torch.no_grad():
        model(other)
        model.encode(other)
    model.eval()(other)
    assert torch.equal(model.latent.quantizer.codebook, book)
    model.train()(other)
    assert not torch.equal(model.latent.quantizer.codebook, book)


def test_spatial_codes_are_a_grid_whose_tokens_act_locally():
    """With --latent-channels a conv net keeps its code a C x h x w grid (no dense layer at either end): changing the
    top-left token of a 28x28 model's 7x7 grid changes the top-left of the image and leaves the bottom-right as it
    was."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="ae", image_shape=(1, 28, 28), arch="conv", latent_channels=4)).eval()
    assert model.latent.grid == (4, 7, 7) and model.latent_dim == 196
    assert isinstance(model.decoder[0], GridInput) and not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    z = torch.randn(1, 196)
    moved = z.reshape(1, 4, 7, 7).clone()
    moved[:, :, 0, 0] += 3
    with torch.no_grad():
        a, b = model.generate(z), model.generate(moved.reshape(1, -1))
    assert not torch.equal(a[..., :4, :4], b[..., :4, :4]) and torch.equal(a[..., 14:, 14:], b[..., 14:, 14:])


@pytest.mark.parametrize("config, message", [
    (dict(arch="conv", latent_channels=4, latent_dim=10), "does not match the spatial code of 4x7x7"),
    (dict(arch="mlp", latent_channels=4, latent_dim=10), "not a whole number of tokens"),
    (dict(kind="fsq", fsq_levels=(256, 256, 256)), "a codebook of 16,777,216 codes"),
])
def test_code_layouts_that_cannot_be_built_are_refused_in_one_line(config, message):
    with pytest.raises(VaekitError, match=message):
        build_model(ModelConfig(image_shape=(1, 28, 28), **config))


def test_a_vq_vae_from_the_command_line(cli, tmp_path):
    """Train, the code prior fitted and saved with it, sample from it, and the codebook's use in the training log and
    in evaluate."""
    trained = cli("train", "--model", "vqvae", "--data", "digits", "--epochs", "2", "--code-prior-epochs", "2",
                  "--two-stage-epochs", "0", "--out", "vq")
    assert "codes used " in trained.stdout and "prior 'code-prior': a PixelCNN" in trained.stdout
    cli("sample", "vq", "--prior", "code-prior", "-n", "8", "--out", "drawn.png")
    assert (tmp_path / "drawn.png").stat().st_size > 0
    evaluated = cli("evaluate", "vq", "--quick").stdout
    assert "codebook" in evaluated and "codes used by the test images" in evaluated
    assert "samples from code-prior" in evaluated
    recon = float(evaluated.split("-log p(x|z)")[1].split()[0])  # the bound with uniform codes: + 16 log 512 nats
    bound = float(evaluated.split("uniform codes <=")[1].split()[0])
    assert bound == pytest.approx(recon + 16 * math.log(512), abs=0.02)
