"""MNIST and Fashion-MNIST from the committed files in ``data/``, offline.

Two ways in:

* :func:`torchvision_dataset` -- the torchvision dataset object (``datasets.MNIST`` /
  ``datasets.FashionMNIST``), for use with transforms and a ``DataLoader``.
* :func:`load_tensors` -- the whole split as one normalized float tensor in memory, plus
  :class:`Batches`, seeded shuffled mini-batches over it. This is the fast path the training
  loop uses: no per-example Python work, one gather per epoch.

Both verify the committed ``.gz`` archives against torchvision's own md5 list first, so a missing,
truncated or corrupted file is reported by name, with the fix, before anything else happens. No
function here contacts the network, deletes a file or overwrites one: archives are extracted next to
themselves through a temporary file that is renamed into place only when complete.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torchvision import datasets

from .checks import positive_int

#: The datasets the course uses, by the name of their folder in ``data/``.
DATASET_CLASSES: dict[str, type[datasets.MNIST]] = {
    "MNIST": datasets.MNIST,
    "FashionMNIST": datasets.FashionMNIST,
}

#: Environment variable that points bncourse at another data folder.
DATA_DIR_ENV = "BNCOURSE_DATA_DIR"

_RESTORE_HINT = (
    "Restore it from the repository with `git checkout -- {path}` (the course commits the official "
    "file), or copy the official file of that name into {folder}."
)


class DataFileError(RuntimeError):
    """A dataset file is missing, truncated or corrupted. The message names the file and the fix."""


def data_dir() -> Path:
    """Return the course's data folder, wherever the current working directory is.

    Order: the ``BNCOURSE_DATA_DIR`` environment variable; ``data/`` next to the ``bncourse``
    package (a clone of the course); ``data/`` in the working directory or one of its parents.

    Raises:
        DataFileError: if none of them exists.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataFileError(f"{DATA_DIR_ENV}={env!r} is not a directory; point it at the course's data/ folder")
        return path
    candidates = [Path(__file__).resolve().parent.parent / "data"]
    cwd = Path.cwd().resolve()
    candidates += [p / "data" for p in (cwd, *cwd.parents)]
    for path in candidates:
        if (path / "MNIST").is_dir() or (path / "FashionMNIST").is_dir():
            return path
    raise DataFileError(
        "could not find the course's data/ folder (looked next to the bncourse package and in the working "
        f"directory and its parents); run from a clone of the course or set {DATA_DIR_ENV}"
    )


def _check_name(name: str) -> type[datasets.MNIST]:
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, one of {sorted(DATASET_CLASSES)}, got {type(name).__name__}")
    if name not in DATASET_CLASSES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASET_CLASSES)}")
    return DATASET_CLASSES[name]


def expected_files(name: str) -> dict[str, str]:
    """Map each archive of dataset ``name`` to its official md5, as torchvision lists it."""
    cls = _check_name(name)
    return {filename: md5 for filename, md5 in cls.resources}


def md5sum(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Return the md5 hex digest of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _idx_size(path: Path) -> tuple[int, int]:
    """(expected, actual) byte size of an uncompressed IDX file, from its own header."""
    actual = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.read(4)
        if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] != 0x08:
            return -1, actual
        ndim = header[3]
        dims = fh.read(4 * ndim)
        if len(dims) < 4 * ndim:
            return -1, actual
    count = 1
    for i in range(ndim):
        count *= int.from_bytes(dims[4 * i : 4 * i + 4], "big")
    return 4 + 4 * ndim + count, actual


def _extract(archive: Path, target: Path) -> None:
    """Decompress ``archive`` to ``target`` atomically: a temporary file renamed when complete."""
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".part-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(archive, "rb") as src:
            shutil.copyfileobj(src, out, length=1 << 20)
        os.replace(tmp, target)
    except BaseException:
        # Only our own temporary file is ever removed.
        Path(tmp).unlink(missing_ok=True)
        raise


def verify(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Check dataset ``name`` in ``root`` (default :func:`data_dir`) and extract it if needed.

    Every ``.gz`` archive must exist with the official md5; every extracted file must have the size
    its IDX header promises. Missing extracted files are created from the archives.

    Returns:
        The dataset's ``raw`` folder.

    Raises:
        DataFileError: naming the first bad file, the expected md5 and how to restore it.
    """
    _check_name(name)
    root = Path(root) if root is not None else data_dir()
    raw = root / name / "raw"
    for filename, md5 in expected_files(name).items():
        archive = raw / filename
        hint = _RESTORE_HINT.format(path=archive, folder=raw)
        if not archive.is_file():
            raise DataFileError(f"missing dataset file {archive} (expected md5 {md5}). {hint}")
        actual = md5sum(archive)
        if actual != md5:
            raise DataFileError(
                f"dataset file {archive} is truncated or corrupted: md5 {actual}, expected {md5} "
                f"({archive.stat().st_size} bytes on disk). {hint}"
            )
        target = raw / filename[: -len(".gz")]
        if not target.exists():
            _extract(archive, target)
        expected_size, actual_size = _idx_size(target)
        if expected_size != actual_size:
            raise DataFileError(
                f"extracted dataset file {target} is incomplete or corrupted ({actual_size} bytes, its header "
                f"promises {expected_size}). Delete it and run again: it is re-created from {archive.name} "
                "(md5 verified)."
            )
    return raw


def torchvision_dataset(
    name: str, train: bool = True, transform=None, root: str | os.PathLike[str] | None = None
) -> datasets.MNIST:
    """Return torchvision's ``MNIST`` / ``FashionMNIST`` dataset for the files in ``data/``.

    The archives are verified first (:func:`verify`), so torchvision never needs the network.

    Args:
        name: ``"MNIST"`` or ``"FashionMNIST"``.
        train: the 60,000-image training split (``True``) or the 10,000-image test split.
        transform: a torchvision transform applied to each PIL image (e.g. ``ToTensor()``).
        root: data folder; default :func:`data_dir`.
    """
    cls = _check_name(name)
    if not isinstance(train, bool):
        raise TypeError(f"train must be a bool, got {type(train).__name__}")
    root = Path(root) if root is not None else data_dir()
    verify(name, root)
    return cls(root=str(root), train=train, transform=transform, download=False)


def class_names(name: str) -> list[str]:
    """The ten class names of dataset ``name``, in label order."""
    return list(_check_name(name).classes)


@dataclass(frozen=True)
class TensorData:
    """A whole split in memory: ``x`` of shape (N, 1, 28, 28), float32, normalized; ``y`` int64 labels."""

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    mean: float
    std: float

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: str | torch.device) -> "TensorData":
        """A copy with ``x`` and ``y`` on ``device``."""
        return TensorData(self.name, self.split, self.x.to(device), self.y.to(device), self.classes, self.mean, self.std)

    def subset(self, n: int) -> "TensorData":
        """The first ``n`` examples (for quick experiments and tests)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(self):
            raise ValueError(f"n must be an int between 1 and {len(self)}, got {n!r}")
        return TensorData(self.name, self.split, self.x[:n], self.y[:n], self.classes, self.mean, self.std)

    def batches(self, batch_size: int, shuffle: bool = True, seed: int | None = 0, drop_last: bool = False) -> "Batches":
        """Mini-batches over this split; see :class:`Batches`."""
        return Batches(self.x, self.y, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)


@functools.lru_cache(maxsize=None)
def _raw_tensors(name: str, train: bool, root: str) -> tuple[torch.Tensor, torch.Tensor]:
    ds = torchvision_dataset(name, train=train, root=root)
    return ds.data, ds.targets


def load_tensors(
    name: str, split: str = "train", root: str | os.PathLike[str] | None = None
) -> TensorData:
    """Load a whole split as normalized in-memory tensors.

    Pixels are scaled to [0, 1] and standardized with the mean and standard deviation of the
    *training* split (computed here, never typed in), so train and test share one transform.

    Args:
        name: ``"MNIST"`` or ``"FashionMNIST"``.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: data folder; default :func:`data_dir`.
    """
    _check_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root_s = str(Path(root) if root is not None else data_dir())
    train_images, _ = _raw_tensors(name, True, root_s)
    scaled_train = train_images.float().div_(255)
    mean, std = scaled_train.mean().item(), scaled_train.std().item()
    images, labels = _raw_tensors(name, split == "train", root_s)
    x = images.float().div_(255).sub_(mean).div_(std).unsqueeze(1).contiguous()
    return TensorData(name, split, x, labels.clone(), tuple(class_names(name)), mean, std)


class Batches:
    """Seeded, shuffled mini-batches over in-memory tensors.

    Each pass (epoch) draws a new permutation from a generator seeded once with ``seed``, so the
    sequence of epochs is reproducible and two models given ``Batches`` with the same seed see the
    same examples in the same order. The permutation is applied once per epoch (one gather), after
    which every batch is a contiguous view.

    Args:
        x, y: inputs and targets with the same first dimension.
        batch_size: examples per batch (the last batch may be smaller unless ``drop_last``).
        shuffle: reshuffle every epoch; ``False`` keeps the stored order.
        seed: seed of the shuffling generator; ``None`` draws from torch's global generator.
        drop_last: drop a final incomplete batch.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int | None = 0,
        drop_last: bool = False,
    ) -> None:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"x and y must be torch tensors, got {type(x).__name__} and {type(y).__name__}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same number of examples, got {x.shape[0]} and {y.shape[0]}")
        positive_int("batch_size", batch_size)
        if x.shape[0] == 0:
            raise ValueError("cannot make batches of an empty dataset")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_examples(self) -> int:
        """Examples per pass (after ``drop_last``)."""
        n = self.x.shape[0]
        return (n // self.batch_size) * self.batch_size if self.drop_last else n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.x, self.y
        if self.shuffle:
            perm = torch.randperm(x.shape[0], generator=self.generator).to(x.device)
            x, y = x[perm], y[perm]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield x[start : start + self.batch_size], y[start : start + self.batch_size]
