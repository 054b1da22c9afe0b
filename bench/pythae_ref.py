"""Pythae 0.1.2 reference, run inside its own virtual environment (bench/.venv-pythae) by bench/train_speed.py.

    bench/.venv-pythae/bin/python bench/pythae_ref.py train OUT.json
    bench/.venv-pythae/bin/python bench/pythae_ref.py nll WEIGHTS.npz IMAGES.npy K no_grad|grad OUT.json
    bench/.venv-pythae/bin/python bench/pythae_ref.py family iwae|vamp|wae|rae IMAGES.npy K OUT.json

`train`: one epoch of Pythae's TrainingPipeline on the 60,000 Fashion-MNIST training images with the
pytorch/examples MLP (784-400-20) as custom encoder/decoder, reconstruction_loss="bce", batch 128, Adam 1e-3.
It writes the time of the epoch loop itself (BaseTrainer.train_step, what vaekit's own epoch time covers),
the wall time of the whole pipeline call, and the process's peak RSS.
`nll`: Pythae's `get_nll` with K samples on the given images, using weights exported from a vaekit model, so
both estimators see the same network: `grad` calls it as Pythae's documentation does, `no_grad` inside
torch.no_grad() (which spares it recording autograd graphs it never uses).
`family`: one epoch of Pythae's IWAE (5 samples), VAMP (100 components), WAE_MMD (imq) or RAE_L2 with the same MLP
(WAE and RAE: a 20-wide encoder head, the code), batch 128, Adam 1e-3, each with its library defaults otherwise
(Pythae's WAE and RAE reconstruct with a summed squared error, not a Bernoulli likelihood); then, for IWAE and VAMP,
`get_nll` with K samples on the given images, inside torch.no_grad().
"""

import gzip
import json
import resource
import sys
import tempfile
import time

import numpy as np
import torch
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.pipelines import TrainingPipeline
from pythae.trainers import BaseTrainer, BaseTrainerConfig
from torch import nn

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


class Encoder(BaseEncoder):
    def __init__(self, variational: bool = True):
        super().__init__()
        self.variational = variational  # head: mu and log sigma^2, as vaekit's; else the code alone
        self.fc1, self.head = nn.Linear(784, 400), nn.Linear(400, 40 if variational else 20)

    def forward(self, x):
        out = self.head(torch.relu(self.fc1(x.reshape(-1, 784))))
        if not self.variational:
            return ModelOutput(embedding=out)
        mu, logvar = out.chunk(2, dim=-1)
        return ModelOutput(embedding=mu, log_covariance=logvar)


class Decoder(BaseDecoder):
    def __init__(self):
        super().__init__()
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, z):
        return ModelOutput(reconstruction=torch.sigmoid(self.fc4(torch.relu(self.fc3(z)))).reshape(-1, 1, 28, 28))


def model() -> VAE:
    return VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce"), Encoder(), Decoder())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fashion() -> np.ndarray:
    raw = gzip.decompress(open(FASHION, "rb").read())
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0


def timed_epoch(net, config=None) -> tuple[float, float]:
    """One epoch of Pythae's pipeline: (seconds of the epoch loop, seconds of the whole call)."""
    from pythae.trainers import CoupledOptimizerTrainer

    images = fashion()
    loop_seconds = []

    def timed(train_step):
        def timed_train_step(self, epoch):  # the epoch loop, timed without changing what it does
            start = time.perf_counter()
            loss = train_step(self, epoch)
            loop_seconds.append(time.perf_counter() - start)
            return loss
        return timed_train_step

    trainers = [cls for cls in (BaseTrainer, CoupledOptimizerTrainer) if "train_step" in vars(cls)]
    originals = {cls: cls.train_step for cls in trainers}
    for cls in trainers:
        cls.train_step = timed(originals[cls])
    with tempfile.TemporaryDirectory() as folder:
        config = config or BaseTrainerConfig
        config = config(output_dir=folder, num_epochs=1, learning_rate=1e-3, per_device_train_batch_size=128,
                        optimizer_cls="Adam", no_cuda=True)
        start = time.perf_counter()
        TrainingPipeline(training_config=config, model=net)(train_data=images)
        seconds = time.perf_counter() - start
    for cls in trainers:
        cls.train_step = originals[cls]
    return loop_seconds[0], seconds


def family(name: str, images: str, k: str, out: str) -> None:
    from pythae.models import IWAE, RAE_L2, VAMP, WAE_MMD, IWAEConfig, RAE_L2_Config, VAMPConfig, WAE_MMD_Config
    from pythae.trainers import CoupledOptimizerTrainerConfig

    shape = {"input_dim": (1, 28, 28), "latent_dim": 20}
    made = {"iwae": lambda: IWAE(IWAEConfig(**shape, reconstruction_loss="bce", number_samples=5), Encoder(),
                                 Decoder()),
            "vamp": lambda: VAMP(VAMPConfig(**shape, reconstruction_loss="bce", number_components=100), Encoder(),
                                 Decoder()),
            "wae": lambda: WAE_MMD(WAE_MMD_Config(**shape, kernel_choice="imq"), Encoder(False), Decoder()),
            "rae": lambda: RAE_L2(RAE_L2_Config(**shape), Encoder(False), Decoder())}
    torch.manual_seed(0)
    net = made[name]()
    loop, whole = timed_epoch(net, CoupledOptimizerTrainerConfig if name == "rae" else None)
    result = {"seconds": loop, "pipeline_seconds": whole, "rss_mb": peak_rss_mb()}
    if name in ("iwae", "vamp"):
        net.eval()
        x = torch.from_numpy(np.load(images))
        torch.manual_seed(0)
        start = time.perf_counter()
        with torch.no_grad():
            result["nll"] = -float(net.get_nll(x, n_samples=int(k), batch_size=int(k)))
        result["nll_seconds"] = time.perf_counter() - start
    json.dump(result, open(out, "w"))


def train(out: str) -> None:
    torch.manual_seed(0)
    loop, whole = timed_epoch(model())
    json.dump({"seconds": loop, "pipeline_seconds": whole, "rss_mb": peak_rss_mb()}, open(out, "w"))


def nll(weights: str, images: str, k: str, mode: str, out: str) -> None:
    w = np.load(weights)
    vae = model()
    state = {"encoder.fc1.weight": w["encoder.1.weight"], "encoder.fc1.bias": w["encoder.1.bias"],
             "encoder.head.weight": w["encoder.3.weight"], "encoder.head.bias": w["encoder.3.bias"],
             "decoder.fc3.weight": w["decoder.0.weight"], "decoder.fc3.bias": w["decoder.0.bias"],
             "decoder.fc4.weight": w["decoder.2.weight"], "decoder.fc4.bias": w["decoder.2.bias"]}
    vae.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()}, strict=False)
    vae.eval()
    x = torch.from_numpy(np.load(images))
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.set_grad_enabled(mode == "grad"):
        value = vae.get_nll(x, n_samples=int(k), batch_size=int(k))
    seconds = time.perf_counter() - start
    json.dump({"nll": -float(value), "seconds": seconds}, open(out, "w"))  # get_nll returns the mean log p(x)


if __name__ == "__main__":
    {"train": train, "nll": nll, "family": family}[sys.argv[1]](*sys.argv[2:])
