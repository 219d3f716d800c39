"""What ``python -m nkat_lightning.analyze`` draws and writes: attention roll-out, confusion
matrix, per-class accuracy, calibration (and how the attention temperature moves it), the
learned NKAT parameters, attention entropy / sparsity per layer; PNG + ``analysis.json`` (and
W&B images when the run logged to W&B)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torchmetrics.classification import (  # noqa: E402
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
)

from nkat_lightning.analysis.statistics import (  # noqa: E402
    attention_rollout,
    attention_statistics,
    nkat_parameters,
    reliability_bins,
    scaled_temperatures,
)
from nkat_lightning.data import build_datamodule  # noqa: E402
from nkat_lightning.training.evaluate import load_module, load_run  # noqa: E402
from nkat_lightning.training.results import print_results, write_json  # noqa: E402

TEMPERATURE_FACTORS = [0.5, 0.75, 1.0, 1.5, 2.0]
SUMMARY_KEYS = ["data", "images", "accuracy", "ece", "checkpoint", "out"]


@torch.no_grad()
def predict(net, datamodule, max_images: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and targets over the test set (the first ``max_images``)."""
    probs, targets, seen = [], [], 0
    for images, labels in datamodule.test_dataloader():
        if max_images is not None and seen >= max_images:
            break
        x = datamodule.to_model_input(images, train=False)
        probs.append(net(x).softmax(-1))
        targets.append(labels)
        seen += len(labels)
    probs, targets = torch.cat(probs), torch.cat(targets)
    return (probs, targets) if max_images is None else (probs[:max_images], targets[:max_images])


def calibration(probs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    confusion = MulticlassConfusionMatrix(num_classes)(probs, targets)
    return {
        "accuracy": float(MulticlassAccuracy(num_classes, average="micro")(probs, targets)),
        "ece": float(MulticlassCalibrationError(num_classes, n_bins=15)(probs, targets)),
        "per_class_accuracy": MulticlassAccuracy(num_classes, average=None)(probs, targets).tolist(),
        "confusion_matrix": confusion.tolist(),
    }


def temperature_sweep(net, datamodule, max_images: int | None, num_classes: int,
                      unscaled: dict) -> list[dict]:
    """Accuracy and ECE with every layer's attention temperature scaled by each factor;
    ``unscaled`` holds the scores at factor 1, already computed."""
    rows = []
    for factor in TEMPERATURE_FACTORS:
        scores = unscaled
        if factor != 1.0:
            scaled_temperatures(net, factor)
            try:
                probs, targets = predict(net, datamodule, max_images)
            finally:
                scaled_temperatures(net, 1.0 / factor)
            scores = calibration(probs, targets, num_classes)
        rows.append({"factor": factor, "accuracy": scores["accuracy"], "ece": scores["ece"]})
    return rows


def sample_images(datamodule, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` test images, uint8, and their labels."""
    indices = list(range(min(count, len(datamodule.test_set))))
    return datamodule.test_set.__getitems__(indices)


def plot_rollout(images: torch.Tensor, heat: torch.Tensor, labels, predicted, classes, path: Path):
    """One row per image: the image, the roll-out heat-map, the overlay."""
    fig, axes = plt.subplots(len(images), 3, figsize=(6.6, 2.2 * len(images)), squeeze=False)
    for row, (image, h) in enumerate(zip(images, heat, strict=True)):
        shown = image.permute(1, 2, 0).squeeze(-1).numpy()
        cmap = "gray" if image.shape[0] == 1 else None
        axes[row, 0].imshow(shown, cmap=cmap)
        axes[row, 0].set_title(f"{classes[labels[row]]} -> {classes[predicted[row]]}", fontsize=8)
        axes[row, 1].imshow(h.numpy(), cmap="inferno", vmin=0, vmax=1)
        axes[row, 1].set_title("roll-out", fontsize=8)
        axes[row, 2].imshow(shown, cmap=cmap)
        axes[row, 2].imshow(h.numpy(), cmap="inferno", alpha=0.5, vmin=0, vmax=1)
        axes[row, 2].set_title("overlay", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: list, classes: list[str], path: Path) -> None:
    metric = MulticlassConfusionMatrix(len(classes))
    size = max(5, 0.45 * len(classes))
    fig, ax = plt.subplots(figsize=(size, size))
    metric.plot(torch.tensor(confusion), ax=ax, labels=classes, add_text=len(classes) <= 20)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_bars(values: list[float], labels: list[str], title: str, ylabel: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * len(values)), 3.5))
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=7)
    ax.set(title=title, ylabel=ylabel, ylim=(0, 1.02))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_calibration(bins: list[dict], ece: float, sweep: list[dict], path: Path) -> None:
    """Reliability diagram, and accuracy / ECE against the attention temperature factor."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    filled = [b for b in bins if b["count"]]
    left.bar([(b["low"] + b["high"]) / 2 for b in filled], [b["accuracy"] for b in filled],
             width=1 / len(bins), edgecolor="k", alpha=0.7, label="accuracy")
    left.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    left.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o",
              color="tab:red", ms=3, label="(confidence, accuracy)")
    left.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
             title=f"reliability (ECE {ece:.4f})")
    left.legend(fontsize=8)
    factors = [row["factor"] for row in sweep]
    right.plot(factors, [row["ece"] for row in sweep], "o-", color="tab:red", label="ECE")
    right.set(xscale="log", xlabel="attention temperature x factor", ylabel="ECE",
              title="attention temperature vs calibration")
    twin = right.twinx()
    twin.plot(factors, [row["accuracy"] for row in sweep], "s--", color="tab:blue",
              label="accuracy")
    twin.set_ylabel("accuracy")
    right.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_layers(nkat: list[dict], stats: list[dict], path: Path) -> None:
    """Per layer: temperature, alpha and beta; attention entropy and zero share."""
    layers = [row["layer"] for row in nkat]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(layers, [row["temperature"] for row in nkat], "o-", label="temperature")
    if nkat and nkat[0]["alpha"] is not None:
        left.plot(layers, [row["alpha"] for row in nkat], "s-", label="alpha")
        left.plot(layers, [row["beta"] for row in nkat], "^-", label="beta")
    left.set(xlabel="layer", title="NKAT parameters")
    left.legend(fontsize=8)
    right.plot(layers, [s["normalized_entropy"] for s in stats], "o-",
               label="entropy / log(tokens)")
    right.plot(layers, [s["zero_fraction"] for s in stats], "s-",
               label="share of zero weights (top-k/top-p)")
    right.set(xlabel="layer", ylim=(0, 1.02), title="attention entropy and sparsity")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.set_xticks(layers)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def log_to_wandb(cfg, images: dict[str, Path], run_dir: Path) -> None:
    """A W&B run of job type 'analysis' in the training run's project (and its group, when
    one was set by name)."""
    from nkat_lightning.training.loggers import wandb_logger

    settings = OmegaConf.to_container(cfg.logger.wandb, resolve=False)
    logger = wandb_logger(offline=settings.get("offline", "auto"), save_dir=str(run_dir),
                          project=settings.get("project"), group=settings.get("group"),
                          name=f"analyze-{run_dir.name}", job_type="analysis")
    import wandb

    logger.experiment.log({name: wandb.Image(str(path)) for name, path in images.items()})
    wandb.finish()


def analyze(target: Path, overrides: list[str] | None = None, images: int = 8,
            max_images: int | None = None, out: Path | None = None) -> dict:
    ckpt, cfg, run_dir = load_run(target, overrides or [])
    datamodule = build_datamodule(OmegaConf.to_container(cfg.data, resolve=True))
    datamodule.prepare_data()
    datamodule.setup("test")
    net = load_module(ckpt).net.eval()
    classes = list(datamodule.test_set.classes)
    num_classes = len(classes)
    out = out or run_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)

    probs, targets = predict(net, datamodule, max_images)
    scores = calibration(probs, targets, num_classes)
    bins = reliability_bins(probs, targets)
    sweep = temperature_sweep(net, datamodule, max_images, num_classes, scores)

    sample, labels = sample_images(datamodule, images)
    x = datamodule.to_model_input(sample, train=False)
    maps = net.attention_maps(x)
    with torch.no_grad():
        predicted = net(x).argmax(-1)
    heat = attention_rollout(maps, net.patch_embed.grid_size, x.shape[-1], net.num_prefix_tokens)
    stats = attention_statistics(maps)
    nkat = nkat_parameters(net)

    pngs = {"rollout": out / "rollout.png", "confusion_matrix": out / "confusion_matrix.png",
            "per_class_accuracy": out / "per_class_accuracy.png",
            "calibration": out / "calibration.png", "layers": out / "layers.png"}
    plot_rollout(sample, heat, labels.tolist(), predicted.tolist(), classes, pngs["rollout"])
    plot_confusion(scores["confusion_matrix"], classes, pngs["confusion_matrix"])
    plot_bars(scores["per_class_accuracy"], classes, "per-class accuracy", "accuracy",
              pngs["per_class_accuracy"])
    plot_calibration(bins, scores["ece"], sweep, pngs["calibration"])
    plot_layers(nkat, stats, pngs["layers"])

    results = {
        "data": cfg.data.name, "checkpoint": str(ckpt), "images": len(targets),
        "classes": classes, **scores, "reliability_bins": bins, "temperature_sweep": sweep,
        "nkat_parameters": nkat, "attention": stats,
        "rollout": {"images": len(sample), "labels": labels.tolist(),
                    "predicted": predicted.tolist(), "maps": heat.tolist()},
        "files": {name: str(path) for name, path in pngs.items()}, "out": str(out),
    }
    write_json(out / "analysis.json", results)
    if "wandb" in (cfg.get("logger") or {}):
        log_to_wandb(cfg, pngs, run_dir)
    print_results(f"analyze: {ckpt}", results, SUMMARY_KEYS)
    return results
