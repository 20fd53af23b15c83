"""MNIST and Fashion-MNIST from the committed files in ``data/``, offline and verified.

Two ways in:

* :func:`torchvision_dataset` -- the torchvision dataset object (``datasets.MNIST`` /
  ``datasets.FashionMNIST``), for use with transforms and a ``DataLoader``.
* :func:`load_tensors` -- the whole split as one normalized float tensor in memory, plus
  :class:`Batches`, seeded shuffled mini-batches over it. This is the fast path the training
  loop uses: no per-example Python work, one gather per epoch.

Every file the loaders read has been checked in this process against a recorded checksum: the
``.gz`` archives against torchvision's own md5 list, the files extracted from them against the
sha256 sums recorded here (:func:`extracted_files`). A missing, truncated or corrupted file is
reported by name, with what was expected and the fix, before anything is read from it. Checks are
remembered per file together with its size, modification and change times and inode, so a file that
changes on disk is checked again on the next call, and so are the tensors cached in memory.

torchvision's legacy ``processed/training.pt`` / ``test.pt`` caches are never read (a warning says
they are ignored). No function here contacts the network, and none deletes or overwrites a file the
user put there: archives are extracted next to themselves through a temporary
``<name>.bncourse-tmp-<32 hex digits>`` file, created with the user's normal permissions (umask) and
renamed into place only when complete. A temporary file is removed on every failure path; one left behind
by a killed process is removed by the next extraction, under a lock that concurrent loaders share. Only
files whose whole name has exactly that form are ever removed (a ``<name>.part-aa`` of ``split`` or a
``<name>.part-notes.txt`` is the user's and is never touched).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import re
import secrets
import shutil
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Callable, Iterator

import torch
from torchvision import datasets

from .checks import TORCH_SEEDS, flag, positive_int
from .checks import seed as seed_check

try:  # POSIX; elsewhere extraction runs without the cross-process lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "offline_cifar10",
    "subset_size",
    "holdout_rows",
    "DATASET_CLASSES",
    "DATA_DIR_ENV",
    "DataFileError",
    "IgnoredCacheWarning",
    "MNIST",
    "FashionMNIST",
    "data_dir",
    "expected_files",
    "extracted_files",
    "md5sum",
    "sha256sum",
    "verify",
    "torchvision_dataset",
    "class_names",
    "TensorData",
    "load_tensors",
    "Batches",
]

#: The datasets the course uses, by the name of their folder in ``data/``.
DATASET_CLASSES: dict[str, type[datasets.MNIST]] = {
    "MNIST": datasets.MNIST,
    "FashionMNIST": datasets.FashionMNIST,
}

#: Environment variable that points bncourse at another data folder.
DATA_DIR_ENV = "BNCOURSE_DATA_DIR"

#: Size in bytes and sha256 of each file extracted from a verified archive (also in data/README.md).
_EXTRACTED: dict[str, dict[str, tuple[int, str]]] = {
    "MNIST": {
        "train-images-idx3-ubyte": (47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train-labels-idx1-ubyte": (60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "t10k-images-idx3-ubyte": (7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "t10k-labels-idx1-ubyte": (10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": (47040016, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte": (60008, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte": (7840016, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte": (10008, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
}

_EXTRACTED_SIZES = {filename: size for files in _EXTRACTED.values() for filename, (size, _) in files.items()}

#: Infix of the temporary files an extraction writes (``<extracted name>.bncourse-tmp-<32 hex digits>``):
#: only a file whose whole name has this form is ever removed (see :func:`_is_own_part`).
_PART = ".bncourse-tmp-"
_PART_TOKEN_BYTES = 16

_RESTORE_HINT = (
    "Restore it from the repository with `git checkout -- {path}` (the course commits the official "
    "file), or copy the official file of that name into {folder}."
)

_WRITABLE_HINT = (
    "Point `root` (or the {env} environment variable) at a writable copy of the data folder, e.g. "
    "`cp -r {root} ~/bncourse-data` and then `root='~/bncourse-data'`, or ask whoever owns {root} to "
    "run the course there once so that the extracted files exist."
)


class DataFileError(RuntimeError):
    """A dataset file is missing, truncated, corrupted or cannot be written. The message names the file and the fix."""


class IgnoredCacheWarning(UserWarning):
    """torchvision's legacy ``processed/`` cache is present; bncourse ignores it and reads the verified files."""


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


def _root(root: str | os.PathLike[str] | None) -> Path:
    if root is None:
        return data_dir()
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike) or None, got {type(root).__name__}")
    return Path(root).expanduser()


def expected_files(name: str) -> dict[str, str]:
    """Map each archive of dataset ``name`` to its official md5, as torchvision lists it."""
    cls = _check_name(name)
    return {filename: md5 for filename, md5 in cls.resources}


def extracted_files(name: str) -> dict[str, str]:
    """Map each file extracted from the archives of dataset ``name`` to its recorded sha256."""
    _check_name(name)
    return {filename: sha for filename, (_, sha) in _EXTRACTED[name].items()}


def _file_digest(path: str | os.PathLike[str], algorithm: str, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Return the md5 hex digest of a file, read ``chunk_size`` bytes at a time."""
    return _file_digest(path, "md5", positive_int("chunk_size", chunk_size))


def sha256sum(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Return the sha256 hex digest of a file, read ``chunk_size`` bytes at a time."""
    return _file_digest(path, "sha256", positive_int("chunk_size", chunk_size))


# --- verification, remembered per file ---------------------------------------------------------

#: What identifies one state of a file on disk: any write, replacement or copy-over changes it.
_Signature = tuple[int, int, int, int, int]

#: Absolute path -> signature of the file when its checksum last matched, in this process.
_verified: dict[str, _Signature] = {}
_lock = threading.RLock()

#: torchvision caches already reported as ignored in this process.
_warned: set[str] = set()


def _signature(path: Path) -> _Signature:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _check_file(path: Path, digest: Callable[[Path], str], expected: str, mismatch: Callable[[str], str]) -> _Signature:
    """The file's signature once its ``digest`` equals ``expected`` (hashing only if it changed)."""
    key = os.path.abspath(path)
    before = _signature(path)
    if _verified.get(key) == before:
        return before
    actual = digest(path)
    if actual != expected:
        _verified.pop(key, None)
        raise DataFileError(mismatch(actual))
    if _signature(path) == before:  # unchanged while it was being read
        _verified[key] = before
    return before


def _check_archive(archive: Path, md5: str) -> _Signature:
    hint = _RESTORE_HINT.format(path=archive, folder=archive.parent)
    if not archive.is_file():
        raise DataFileError(f"missing dataset file {archive} (expected md5 {md5}). {hint}")
    return _check_file(
        archive,
        md5sum,
        md5,
        lambda actual: (
            f"dataset file {archive} is truncated or corrupted: md5 {actual}, expected {md5} "
            f"({archive.stat().st_size} bytes on disk). {hint}"
        ),
    )


def _check_extracted(target: Path, archive: Path, size: int, sha: str) -> _Signature:
    fix = (
        f"Delete it and run again: it is re-created from {archive.name} (md5 verified). bncourse never deletes "
        "or overwrites it itself."
    )
    if not target.is_file():
        raise DataFileError(f"extracted dataset file {target} is not a regular file. {fix}")
    return _check_file(
        target,
        sha256sum,
        sha,
        lambda actual: (
            f"extracted dataset file {target} is incomplete or corrupted: sha256 {actual}, expected {sha} "
            f"({target.stat().st_size} bytes on disk, expected {size}). {fix}"
        ),
    )


# --- extraction --------------------------------------------------------------------------------


@contextmanager
def _exclusive(archive: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``archive`` (shared by every process extracting it); yields whether it is held.

    The kernel releases the lock when its holder exits, even when killed, so a temporary file found
    while the lock is held belongs to no running extraction.
    """
    if fcntl is None:
        yield False
        return
    fd = os.open(archive, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:  # a file system without locks (some network mounts)
            locked = False
        yield locked
    finally:
        os.close(fd)  # releases the lock


def _part_name(target: Path) -> str:
    """A fresh temporary name for ``target``: ``<name>.bncourse-tmp-<32 random hex digits>``."""
    return target.name + _PART + secrets.token_hex(_PART_TOKEN_BYTES)


def _is_own_part(filename: str, target: Path) -> bool:
    """Whether ``filename`` is exactly a temporary name :func:`_part_name` makes for ``target`` (nothing else)."""
    return re.fullmatch(re.escape(target.name + _PART) + f"[0-9a-f]{{{2 * _PART_TOKEN_BYTES}}}", filename) is not None


def _stale_parts(target: Path) -> list[Path]:
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    return [Path(e.path) for e in entries if _is_own_part(e.name, target) and e.is_file(follow_symlinks=False)]


def _remove_stale_parts(target: Path) -> None:
    for part in _stale_parts(target):
        try:
            part.unlink()
        except OSError:  # e.g. a read-only folder: harmless, never read
            pass


def _write_error(exc: OSError, archive: Path, target: Path, root: Path) -> DataFileError:
    writable = _WRITABLE_HINT.format(env=DATA_DIR_ENV, root=root)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DataFileError(
            f"cannot create the extracted dataset file {target} from {archive.name}: the folder {target.parent} is "
            f"not writable ({exc.strerror}). {writable}"
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataFileError(
            f"cannot create the extracted dataset file {target} from {archive.name}: no space left on the device "
            f"({exc.strerror}). Free {_EXTRACTED_SIZES.get(target.name, 0) // 2**20 + 1} MB there, or: {writable}"
        )
    return DataFileError(f"cannot create the extracted dataset file {target} from {archive.name}: {exc}. {writable}")


def _create_part(target: Path) -> tuple[int, Path]:
    """A new temporary file next to ``target``, opened for writing, with the umask's permissions."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        tmp = target.with_name(_part_name(target))
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _extract(archive: Path, target: Path, root: Path) -> None:
    """Decompress ``archive`` to ``target`` atomically: a temporary file renamed when complete.

    Under the archive's lock: if another process has finished meanwhile, nothing is done; otherwise
    temporary files left by a killed extraction are removed first. Only those temporary files are ever
    removed, and the target is only ever created, never replaced.
    """
    with _exclusive(archive) as locked:
        if os.path.lexists(target):
            return
        if locked:
            _remove_stale_parts(target)
        try:
            fd, tmp = _create_part(target)
        except OSError as exc:
            raise _write_error(exc, archive, target, root) from exc
        try:
            with open(fd, "wb") as out, gzip.open(archive, "rb") as src:
                shutil.copyfileobj(src, out, length=1 << 20)
            if os.path.lexists(target):  # put there by a process that does not take the lock
                return
            os.replace(tmp, target)
        except OSError as exc:
            if exc.errno is None:  # not a file-system error (e.g. gzip's own)
                raise
            raise _write_error(exc, archive, target, root) from exc
        finally:
            # Only our own temporary file is ever removed (it is gone after a successful rename).
            tmp.unlink(missing_ok=True)



def _processed_caches(root: Path, name: str) -> list[Path]:
    processed = root / name / "processed"
    return [p for p in (processed / datasets.MNIST.training_file, processed / datasets.MNIST.test_file) if p.exists()]


def _verify(name: str, root: Path) -> tuple[Path, tuple[_Signature, ...]]:
    """Check (and if needed extract) every file of ``name``; the raw folder and the files' signatures."""
    raw = root / name / "raw"
    signatures: list[_Signature] = []
    with _lock:
        for filename, md5 in expected_files(name).items():
            archive = raw / filename
            signatures.append(_check_archive(archive, md5))
            target = raw / filename[: -len(".gz")]
            size, sha = _EXTRACTED[name][target.name]
            if not os.path.lexists(target):
                _extract(archive, target, root)
            elif _stale_parts(target):  # left by a killed extraction
                with _exclusive(archive) as locked:
                    if locked:
                        _remove_stale_parts(target)
            signatures.append(_check_extracted(target, archive, size, sha))
    caches = [p for p in _processed_caches(root, name) if os.path.abspath(p) not in _warned]
    if caches:
        _warned.update(os.path.abspath(p) for p in caches)
        warnings.warn(
            f"ignoring torchvision's cache {', '.join(str(p) for p in caches)}: bncourse reads only the verified "
            f"files in {raw}. Delete {root / name / 'processed'} if nothing else needs it.",
            IgnoredCacheWarning,
            stacklevel=3,
        )
    return raw, tuple(signatures)


def verify(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Check dataset ``name`` in ``root`` (default :func:`data_dir`) and extract it if needed.

    Every ``.gz`` archive must exist with the official md5 (:func:`expected_files`); every extracted
    file must have its recorded sha256 (:func:`extracted_files`). Missing extracted files are created
    from the verified archives. A file is hashed again only when it has changed on disk since it was
    last found good in this process.

    Returns:
        The dataset's ``raw`` folder.

    Raises:
        DataFileError: naming the first bad file, what was expected and how to fix it, or the folder
            that could not be written and where to point ``root`` instead.
    """
    _check_name(name)
    return _verify(name, _root(root))[0]


class _VerifiedFiles:
    """torchvision's MNIST loader over verified files only: verification first, the legacy cache never."""

    _course_name: str

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        flag("train", train)
        root = _root(root)
        _verify(self._course_name, root)
        super().__init__(str(root), train=train, transform=transform, target_transform=target_transform)

    def _check_legacy_exist(self) -> bool:
        return False  # processed/*.pt are never read; _verify warns when they exist


class MNIST(_VerifiedFiles, datasets.MNIST):
    """``torchvision.datasets.MNIST`` that first verifies the files (:func:`verify`) and never downloads.

    Args:
        root: data folder; default :func:`data_dir`.
        train, transform, target_transform: as for torchvision's class.
    """

    _course_name = "MNIST"


class FashionMNIST(_VerifiedFiles, datasets.FashionMNIST):
    """``torchvision.datasets.FashionMNIST`` that first verifies the files (:func:`verify`) and never downloads.

    Args:
        root: data folder; default :func:`data_dir`.
        train, transform, target_transform: as for torchvision's class.
    """

    _course_name = "FashionMNIST"


_VERIFIED_CLASSES: dict[str, type[datasets.MNIST]] = {"MNIST": MNIST, "FashionMNIST": FashionMNIST}


def torchvision_dataset(
    name: str, train: bool = True, transform: Callable | None = None, root: str | os.PathLike[str] | None = None
) -> datasets.MNIST:
    """Return torchvision's ``MNIST`` / ``FashionMNIST`` dataset for the files in ``data/``.

    The files are verified first (:func:`verify`), so torchvision never needs the network, and
    torchvision's legacy ``processed/`` cache is not read (see :class:`MNIST`).

    Args:
        name: ``"MNIST"`` or ``"FashionMNIST"``.
        train: the 60,000-image training split (``True``) or the 10,000-image test split.
        transform: a torchvision transform applied to each PIL image (e.g. ``ToTensor()``).
        root: data folder; default :func:`data_dir`.
    """
    _check_name(name)
    flag("train", train)
    return _VERIFIED_CLASSES[name](root, train=train, transform=transform)


def class_names(name: str) -> list[str]:
    """The ten class names of dataset ``name``, in label order."""
    return list(_check_name(name).classes)


def subset_size(n: object, size: int) -> int:
    """``n`` as an int if it is an integer between 1 and ``size`` (NumPy integers too), else a ``ValueError``:
    the check of ``subset(n)`` on both sides (:class:`TensorData`, ``bncourse.gluon.ArrayData``)."""
    if isinstance(n, bool) or not isinstance(n, Integral) or not 1 <= n <= size:
        raise ValueError(f"n must be an int between 1 and {size}, got {type(n).__name__} {n!r}")
    return int(n)


def holdout_rows(size: int, validation: object, seed: object = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``holdout`` keeps and holds out, on both sides: ``validation`` of ``size`` rows drawn with ``seed``.

    Returns ``(rest, held_out)``, each a sorted index tensor, so that :meth:`TensorData.holdout` and
    ``bncourse.gluon.ArrayData.holdout`` given the same seed split the same examples.
    """
    if isinstance(validation, bool) or not isinstance(validation, Integral) or not 1 <= validation < size:
        raise ValueError(f"validation must be an int between 1 and {size - 1}, got {type(validation).__name__} {validation!r}")
    seed_check("seed", seed, upper=TORCH_SEEDS[1], lower=TORCH_SEEDS[0])
    order = torch.randperm(size, generator=torch.Generator().manual_seed(int(seed)))
    return order[: size - int(validation)].sort().values, order[size - int(validation):].sort().values


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
        n = subset_size(n, len(self))
        return TensorData(self.name, self.split, self.x[:n], self.y[:n], self.classes, self.mean, self.std)

    def holdout(self, validation: int, seed: int = 0) -> tuple["TensorData", "TensorData"]:
        """Hold out ``validation`` examples, drawn at random with ``seed``: ``(rest, held_out)``.

        Model selection (epochs, learning rates, settings) uses the held-out part, so the test set
        is measured once, at the selected point. The split names say which part is which.
        """
        rest, held = holdout_rows(len(self), validation, seed)
        return (TensorData(self.name, f"{self.split} (fit)", self.x[rest], self.y[rest], self.classes, self.mean, self.std),
                TensorData(self.name, f"{self.split} (validation)", self.x[held], self.y[held], self.classes, self.mean, self.std))

    def batches(self, batch_size: int, shuffle: bool = True, seed: int | None = 0, drop_last: bool = False) -> "Batches":
        """Mini-batches over this split; see :class:`Batches`."""
        return Batches(self.x, self.y, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)


#: (name, train, absolute root) -> (signatures of the files they were read from, images, labels).
_tensor_cache: dict[tuple[str, bool, str], tuple[tuple[_Signature, ...], torch.Tensor, torch.Tensor]] = {}


def _raw_tensors(name: str, train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's uint8 images and int64 labels, re-read whenever a file changed on disk."""
    _, signatures = _verify(name, root)
    key = (name, train, os.path.abspath(root))
    with _lock:
        cached = _tensor_cache.get(key)
        if cached is not None and cached[0] == signatures:
            return cached[1], cached[2]
        ds = torchvision_dataset(name, train=train, root=root)
        _tensor_cache[key] = (signatures, ds.data, ds.targets)
        return ds.data, ds.targets


def load_tensors(
    name: str, split: str = "train", root: str | os.PathLike[str] | None = None
) -> TensorData:
    """Load a whole split as normalized in-memory tensors.

    Pixels are scaled to [0, 1] and standardized with the mean and standard deviation of the
    *training* split (computed here, never typed in), so train and test share one transform.
    The files are verified on every call (cheaply: a file is hashed again only if it changed), and
    the tensors cached in memory are re-read when a file changed.

    Args:
        name: ``"MNIST"`` or ``"FashionMNIST"``.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: data folder; default :func:`data_dir`.
    """
    _check_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root_p = _root(root)
    train_images, _ = _raw_tensors(name, True, root_p)
    scaled_train = train_images.float().div_(255)
    mean, std = scaled_train.mean().item(), scaled_train.std().item()
    images, labels = _raw_tensors(name, split == "train", root_p)
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
        batch_size = positive_int("batch_size", batch_size)
        flag("shuffle", shuffle)
        flag("drop_last", drop_last)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0):
            raise TypeError(f"seed must be an int >= 0 or None, got {type(seed).__name__} {seed!r}")
        if seed is not None:
            seed_check("seed", seed, upper=TORCH_SEEDS[1])
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
            self.generator.manual_seed(int(seed))

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


def offline_cifar10(root: str | os.PathLike[str] | None = None) -> tuple[TensorData, TensorData] | None:
    """CIFAR-10 (train, test) as normalized in-memory tensors, or ``None`` when it is not on disk.

    Looks for torchvision's ``cifar-10-batches-py`` folder under ``root`` (default
    :func:`bncourse.data.data_dir`) and never downloads. Images become ``(N, 3, 32, 32)`` float32,
    standardized with the training split's overall mean and standard deviation.
    """
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path or None, got {type(root).__name__}")
    root = Path(root) if root is not None else data_dir()
    try:
        splits = [datasets.CIFAR10(root=str(root), train=train, download=False) for train in (True, False)]
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        return None
    train_x = torch.from_numpy(splits[0].data).float().div_(255)
    mean, std = train_x.mean().item(), train_x.std().item()
    result = []
    for split, ds in zip(("train", "test"), splits):
        x = torch.from_numpy(ds.data).float().div_(255).sub_(mean).div_(std).permute(0, 3, 1, 2).contiguous()
        y = torch.tensor(ds.targets, dtype=torch.long)
        result.append(TensorData("CIFAR10", split, x, y, tuple(ds.classes), mean, std))
    return result[0], result[1]
