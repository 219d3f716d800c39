"""Small synthetic data sets in each data set's native on-disk format, so torchvision's own
loaders read them. Each class draws a bright square at its own position, so a model can learn."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from nkat_lightning.config.schema import EMNIST_SPLITS
from nkat_lightning.data.mnist import IDX_FILES


def class_images(labels: np.ndarray, size: int, channels: int, seed: int) -> np.ndarray:
    """uint8 images (N, size, size, channels) with a class-dependent square plus noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), size, size, channels), dtype=np.uint8)
    cells = int(np.ceil(np.sqrt(labels.max() + 1)))
    step = size // cells
    for i, label in enumerate(labels):
        r, c = divmod(int(label), cells)
        images[i, r * step : r * step + step, c * step : c * step + step] = 255
    return images


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format: magic (0, 0, dtype 0x08 = uint8, ndim), big-endian sizes, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_idx_set(folder: Path, names: list[str], n_train: int, n_test: int, classes: int,
                  label_offset: int = 0, transpose: bool = False) -> None:
    """Four IDX files: train/test images and labels. ``transpose`` stores images as EMNIST
    does (transposed); ``label_offset`` shifts labels (EMNIST letters are 1-based)."""
    for (images_name, labels_name), n, seed in (
        ((names[0], names[1]), n_train, 0),
        ((names[2], names[3]), n_test, 1),
    ):
        labels = np.arange(n) % classes
        images = class_images(labels, 28, 1, seed)[..., 0]
        if transpose:
            images = images.transpose(0, 2, 1)
        write_idx(folder / images_name, images)
        write_idx(folder / labels_name, labels + label_offset)


def write_mnist_like(root: Path, folder: str, n_train: int = 240, n_test: int = 80) -> None:
    write_idx_set(root / folder / "raw", IDX_FILES, n_train, n_test, 10)


def emnist_names(split: str) -> list[str]:
    return [f"emnist-{split}-{p}-{k}-ubyte" for p in ("train", "test")
            for k in ("images-idx3", "labels-idx1")]


def write_emnist(root: Path, split: str, n_train: int = 240, n_test: int = 80) -> None:
    write_idx_set(root / "EMNIST" / "raw", emnist_names(split), n_train, n_test,
                  EMNIST_SPLITS[split], label_offset=1 if split == "letters" else 0,
                  transpose=True)


def write_cifar10(root: Path, n_per_batch: int = 48, n_test: int = 80) -> None:
    """Pickled batches: ``data`` uint8 (N, 3072) channel-planar, ``labels`` list of int."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for index, name in enumerate(batches):
        n = n_test if name == "test_batch" else n_per_batch
        labels = np.arange(n) % 10
        images = class_images(labels, 32, 3, index).transpose(0, 3, 1, 2).reshape(n, -1)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images, "labels": labels.tolist()}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)


def write_all(root: Path, n_train: int = 240) -> Path:
    """Every data set's native files under ``root``, ``n_train`` training images each."""
    write_mnist_like(root, "MNIST", n_train)
    write_mnist_like(root, "FashionMNIST", n_train)
    for split in ("balanced", "letters"):
        write_emnist(root, split, n_train)
    write_cifar10(root, n_per_batch=-(-n_train // 5))
    return root
