"""The AE and VAE presets in particular: shared networks, the losses the seed describes, defaults and refusals.
(What every preset must do is in test_presets.py.)"""

import copy
import math

import pytest
import torch
from torch import nn

from vaekit import ModelConfig
from vaekit.errors import VaekitError
from vaekit.models import DiagonalGaussian, PointMass, build_model


def VAE(config: ModelConfig):
    """The vae preset with this config's networks."""
    return build_model(ModelConfig(**{**config.__dict__, "kind": "vae"}))


def AE(config: ModelConfig):
    """The ae preset with this config's networks."""
    return build_model(ModelConfig(**{**config.__dict__, "kind": "ae"}))

@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_ae_and_vae_share_networks_except_the_encoder_head(arch):
    config = ModelConfig(image_shape=(1, 28, 28), arch=arch)
    ae, vae = AE(config), VAE(config)
    ae_shapes = {k: v.shape for k, v in ae.state_dict().items()}
    vae_shapes = {k: v.shape for k, v in vae.state_dict().items()}
    assert ae_shapes.keys() == vae_shapes.keys()
    differing = sorted(k for k in ae_shapes if ae_shapes[k] != vae_shapes[k])
    last = list(ae.encoder.state_dict())[-2:]  # the encoder's last weight and bias
    assert differing == sorted(f"encoder.{k}" for k in last)
    assert vae_shapes[differing[0]][0] == 2 * ae_shapes[differing[0]][0]


def test_defaults_follow_the_image_size():
    fmnist = VAE(ModelConfig(image_shape=(1, 28, 28))).config
    assert (fmnist.arch, fmnist.hidden, fmnist.latent_dim) == ("mlp", (400,), 20)  # pytorch/examples' 784-400-20
    rgb = VAE(ModelConfig(image_shape=(3, 32, 32))).config
    assert rgb.arch == "resnet" and rgb.channels == (32, 64, 128)  # real colour images: the residual net
    grey = VAE(ModelConfig(image_shape=(1, 64, 64))).config
    assert grey.arch == "conv" and grey.channels == (32, 64, 128, 256)
    assert VAE(ModelConfig(image_shape=(1, 8, 8))).config.latent_dim == 8



def test_conv_weights_are_channels_last_a_layout_that_leaves_the_math_unchanged(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=(3, 32, 32), arch="conv"))
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert not convs[1].weight.is_contiguous()  # really NHWC, not a layout that merely reads as both
    nchw = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    x, z = torch.rand(4, 3, 32, 32), torch.randn(4, model.latent_dim)
    torch.testing.assert_close(model.embed(x), nchw.embed(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.generate(z), nchw.generate(z), rtol=1e-4, atol=1e-5)
    model.save_pretrained(tmp_path)  # safetensors takes only contiguous tensors: NHWC weights are saved as plain ones
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())

def test_vae_encoder_returns_a_distribution_and_the_ae_a_point():
    x = torch.rand(2, 1, 8, 8)
    q = VAE(ModelConfig(image_shape=(1, 8, 8))).encode(x)
    assert isinstance(q, DiagonalGaussian) and q.has_density
    assert not torch.equal(q.sample(), q.sample())  # a distribution: two draws differ
    ae = AE(ModelConfig(image_shape=(1, 8, 8)))
    p = ae.encode(x)
    assert isinstance(p, PointMass) and not p.has_density
    assert torch.equal(p.sample(), p.mean) and torch.equal(ae.encode(x).mean, p.mean)  # a point: mean = sample
    assert torch.equal(p.kl(), torch.zeros(2))
    with pytest.raises(ValueError, match="no density"):
        p.log_prob(p.mean)


def test_vae_loss_is_reconstruction_plus_beta_kl():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    model = VAE(ModelConfig(image_shape=(1, 8, 8), beta=2.5))
    torch.manual_seed(1)
    loss = model(x, kl_weight=0.4)
    torch.manual_seed(1)
    q = model.encode(x)
    z = q.sample()
    recon = model.likelihood.nll(x, model.decode(z))
    torch.testing.assert_close(loss.recon, recon)
    torch.testing.assert_close(loss.kl, q.kl())
    torch.testing.assert_close(loss.objective, recon.mean() + 0.4 * 2.5 * q.kl().mean())
    torch.testing.assert_close(loss.total, recon + q.kl())


def test_free_bits_leave_small_kl_unpenalised():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    model = VAE(ModelConfig(image_shape=(1, 8, 8), free_bits=1000.0))
    loss = model(x)
    # every dimension is under the 1000-nat floor: the penalty is the floor, with no gradient to the encoder
    torch.testing.assert_close(loss.objective, loss.recon.mean() + 1000.0 * model.latent_dim)
    # with no floor the batch is penalised by its true KL
    model.config.free_bits = 0.0
    torch.manual_seed(3)
    plain = model(x)
    torch.testing.assert_close(plain.objective, plain.recon.mean() + plain.kl.mean())


def test_ae_loss_is_reconstruction_only():
    x = torch.rand(4, 1, 8, 8)
    model = AE(ModelConfig(kind="ae", image_shape=(1, 8, 8)))
    loss = model(x)
    assert torch.all(loss.kl == 0)
    torch.testing.assert_close(loss.objective, model.likelihood.nll(x, model.decode(model.embed(x))).mean())


def test_gradients_reach_the_encoder_through_the_sampled_z():
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=(1, 8, 8), beta=0.0))  # no KL: the encoder learns only through z
    model(torch.rand(8, 1, 8, 8)).objective.backward()
    head_w = list(model.encoder.parameters())[-2]
    d = model.latent_dim
    assert head_w.grad[:d].abs().sum() > 0, "no gradient to mu"
    assert head_w.grad[d:].abs().sum() > 0, "no gradient to log sigma^2"


def test_build_model_and_bad_configs():
    assert build_model(ModelConfig(kind="ae", image_shape=(1, 8, 8))).kind == "ae"
    with pytest.raises(VaekitError, match="unknown kind"):
        build_model(ModelConfig(kind="gan"))
    with pytest.raises(VaekitError, match="unknown likelihood"):
        VAE(ModelConfig(likelihood="poisson"))
    with pytest.raises(VaekitError, match="too small"):
        VAE(ModelConfig(image_shape=(1, 4, 4), arch="conv", channels=(8, 8, 8)))
    with pytest.raises(VaekitError, match="1 or 3 channels"):
        VAE(ModelConfig(image_shape=(2, 8, 8)))


def test_bits_per_dim_convention():
    """nats per image / (D ln 2): the unit used in every report."""
    from vaekit.data import Batches, TensorImages
    from vaekit.models.objectives import mean_loss

    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=(1, 8, 8)))
    images = TensorImages((torch.rand(50, 1, 8, 8) * 255).to(torch.uint8))
    m = mean_loss(model, Batches(images, 16))
    assert m["images"] == 50
    assert abs(m["bpd"] - m["loss"] / (64 * math.log(2))) < 1e-9
    assert abs(m["nelbo"] - (m["recon"] + m["kl"])) < 1e-6 and abs(m["loss"] - m["nelbo"]) < 1e-4
    ae = mean_loss(AE(ModelConfig(image_shape=(1, 8, 8))), Batches(images, 16))
    assert "nelbo" not in ae and ae["kl"] == 0 and ae["loss"] == ae["recon"]  # an AE has no ELBO


@pytest.mark.parametrize("kind,extra", [("vae", {}), ("ae", {"attention": True}), ("vqvae", {"latent_channels": 4}),
                                        ("vae", {"conditional": True, "classes": 3})])
def test_the_residual_net_is_a_network_of_any_preset(kind, extra, tmp_path):
    """--arch resnet: blocks at each resolution (each starting as the identity), attention at the lowest where asked,
    flat or spatial codes, conditional or not; gradients reach every parameter, it saves and loads, and it exports to
    ONNX with PyTorch's numbers."""
    from vaekit import load
    from vaekit.models.export import export_graphs, parity
    from vaekit.models.networks import Attention, ResBlock

    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, image_shape=(3, 16, 16), arch="resnet", channels=(8, 16), res_blocks=1,
                                    latent_dim=0 if "latent_channels" in extra else 6, **extra))
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 6  # each net: one a resolution (2) and one in the middle
    assert any(isinstance(m, Attention) for m in model.modules()) == bool(extra.get("attention"))
    x = torch.rand(3, 3, 16, 16)
    y = torch.tensor([0, 1, 2]) if model.classes else None
    block_in = torch.randn(2, 8, 4, 4)
    assert torch.equal(blocks[0](block_in), block_in)  # a fresh block is the identity
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):  # the first step moves the blocks' zero convolutions, the second reaches what lies behind them
        optimizer.zero_grad()
        model(x, y=y).objective.backward()
        optimizer.step()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, silent
    model.eval()
    assert model.generate(model.embed(x, y), y).shape == x.shape
    model.save_pretrained(tmp_path / "m")
    torch.testing.assert_close(load(tmp_path / "m").eval().embed(x, y), model.embed(x, y), rtol=0, atol=0)
    if kind == "vae" and not extra:
        differences = parity(model, export_graphs(model, tmp_path), x)
        assert max(v for k, v in differences.items() if isinstance(v, float)) < 1e-4, differences
