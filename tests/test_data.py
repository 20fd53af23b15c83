"""bncourse.data: offline loading, verification, error messages, batching."""

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bncourse import data
from bncourse.data import Batches, DataFileError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def copy_of(tmp_path):
    """Copy one committed dataset (archives only) into a temporary data folder."""

    def make(name="MNIST"):
        raw = tmp_path / name / "raw"
        raw.mkdir(parents=True)
        for filename in data.expected_files(name):
            shutil.copy(REPO / "data" / name / "raw" / filename, raw / filename)
        return tmp_path, raw

    return make


def test_data_dir_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert data.data_dir() == REPO / "data"
    monkeypatch.chdir(REPO / "notebooks")
    assert data.data_dir() == REPO / "data"


def test_data_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert data.data_dir() == tmp_path
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nope"))
    with pytest.raises(DataFileError, match="not a directory"):
        data.data_dir()


def test_committed_archives_match_torchvision_md5_and_readme():
    readme = (REPO / "data" / "README.md").read_text()
    for name in data.DATASET_CLASSES:
        for filename, md5 in data.expected_files(name).items():
            path = REPO / "data" / name / "raw" / filename
            assert data.md5sum(path) == md5
            assert re.search(rf"{name}/raw/{re.escape(filename)}\s*\|\s*`?{md5}", readme), f"README lacks {name}/{filename}"


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_torchvision_dataset_loads_offline(name):
    train = data.torchvision_dataset(name, train=True)
    test = data.torchvision_dataset(name, train=False)
    assert len(train) == 60000 and len(test) == 10000
    image, label = train[0]
    assert image.size == (28, 28) and 0 <= label < 10
    assert data.class_names(name) == list(train.classes)


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_load_tensors_normalized_with_train_statistics(name):
    train = data.load_tensors(name, "train")
    test = data.load_tensors(name, "test")
    assert train.x.shape == (60000, 1, 28, 28) and train.x.dtype == torch.float32
    assert test.x.shape == (10000, 1, 28, 28) and test.y.dtype == torch.int64
    assert abs(train.x.mean().item()) < 1e-4 and abs(train.x.std().item() - 1) < 1e-4
    assert (train.mean, train.std) == (test.mean, test.std)
    assert torch.bincount(train.y).min() > 5000
    raw = data.torchvision_dataset(name, train=False).data[0].float() / 255
    assert torch.allclose(test.x[0, 0], (raw - test.mean) / test.std, atol=1e-6)


def test_missing_file_error_names_file_md5_and_fix(copy_of):
    root, raw = copy_of()
    victim = raw / "train-labels-idx1-ubyte.gz"
    victim.unlink()
    md5 = data.expected_files("MNIST")[victim.name]
    with pytest.raises(DataFileError) as err:
        data.verify("MNIST", root)
    msg = str(err.value)
    assert str(victim) in msg and md5 in msg and "git checkout" in msg and "missing" in msg


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_bad_archive_error_and_nothing_touched(copy_of, damage):
    root, raw = copy_of()
    victim = raw / "t10k-images-idx3-ubyte.gz"
    blob = victim.read_bytes()
    bad = blob[: len(blob) // 2] if damage == "truncate" else blob[:1000] + bytes([blob[1000] ^ 0xFF]) + blob[1001:]
    victim.write_bytes(bad)
    before = {p.name: p.read_bytes() for p in raw.iterdir()}
    with pytest.raises(DataFileError) as err:
        data.torchvision_dataset("MNIST", train=False, root=root)
    msg = str(err.value)
    assert str(victim) in msg and "truncated or corrupted" in msg
    assert data.expected_files("MNIST")[victim.name] in msg
    assert hashlib.md5(bad).hexdigest() in msg
    after = {p.name: p.read_bytes() for p in raw.iterdir() if not p.name.endswith("-ubyte")}
    assert after == {k: v for k, v in before.items() if not k.endswith("-ubyte")}, "user files changed"


def test_incomplete_extracted_file_is_reported_not_replaced(copy_of):
    root, raw = copy_of()
    data.verify("MNIST", root)
    extracted = raw / "train-images-idx3-ubyte"
    full = extracted.stat().st_size
    with open(extracted, "r+b") as fh:  # what a killed non-atomic extraction would leave
        fh.truncate(full // 3)
    with pytest.raises(DataFileError, match="incomplete or corrupted") as err:
        data.verify("MNIST", root)
    assert str(extracted) in str(err.value) and "Delete it" in str(err.value)
    assert extracted.stat().st_size == full // 3, "the file must not be overwritten"
    extracted.unlink()
    data.verify("MNIST", root)
    assert extracted.stat().st_size == full


def test_interrupted_extraction_leaves_nothing_accepted(copy_of):
    """Kill a process in the middle of extracting: the target file must not exist afterwards."""
    root, raw = copy_of()
    script = textwrap.dedent(
        f"""
        import gzip, os, shutil
        from bncourse import data
        real = shutil.copyfileobj
        def dying_copy(src, dst, length=0):
            dst.write(src.read(1 << 20))
            dst.flush()
            os._exit(9)  # as if killed mid-way
        shutil.copyfileobj = dying_copy
        data.verify("MNIST", {str(root)!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == 9
    assert not (raw / "train-images-idx3-ubyte").exists()
    leftovers = [p for p in raw.iterdir() if ".part-" in p.name]
    assert leftovers, "the partial file should be a temporary name, never the target"
    data.verify("MNIST", root)  # a later run extracts afresh and accepts
    assert data.torchvision_dataset("MNIST", train=True, root=root).data.shape == (60000, 28, 28)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_tensors("CIFAR")
    with pytest.raises(TypeError, match="string"):
        data.expected_files(3)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        data.load_tensors("MNIST", "validation")
    with pytest.raises(TypeError, match="train must be a bool"):
        data.torchvision_dataset("MNIST", train="yes")


def test_batches_seeded_shuffled_and_complete():
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    b1, b2 = Batches(x, y, 4, seed=1), Batches(x, y, 4, seed=1)
    assert len(b1) == 3 and b1.num_examples == 10
    e1, e2 = [yb.tolist() for _, yb in b1], [yb.tolist() for _, yb in b2]
    assert e1 == e2 and [len(b) for b in e1] == [4, 4, 2]
    assert sorted(sum(e1, [])) == list(range(10))
    assert sum(e1, []) != list(range(10))
    second = [yb.tolist() for _, yb in b1]
    assert second != e1, "each epoch draws a new permutation"
    for xb, yb in Batches(x, y, 3, seed=5):
        assert torch.equal(xb[:, 0].long(), yb), "inputs and targets stay paired"
    assert [yb.tolist() for _, yb in Batches(x, y, 4, shuffle=False)][0] == [0, 1, 2, 3]
    dropped = Batches(x, y, 4, drop_last=True)
    assert len(dropped) == 2 and dropped.num_examples == 8 and sum(len(b) for _, b in dropped) == 8


def test_batches_bad_input():
    x, y = torch.zeros(5, 2), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="batch_size"):
        Batches(x, y, 0)
    with pytest.raises(ValueError, match="same number"):
        Batches(x, y[:4], 2)
    with pytest.raises(TypeError, match="tensors"):
        Batches(x.numpy(), y, 2)


def test_tensordata_subset_and_batches():
    test = data.load_tensors("FashionMNIST", "test")
    small = test.subset(100)
    assert len(small) == 100 and torch.equal(small.y, test.y[:100])
    assert sum(len(yb) for _, yb in small.batches(32)) == 100
    with pytest.raises(ValueError):
        test.subset(0)


def test_tensordata_to_device_keeps_metadata():
    test = data.load_tensors("MNIST", "test").subset(10)
    moved = test.to("cpu")
    assert moved.x.device.type == "cpu" and moved.classes == test.classes and moved.mean == test.mean
    assert torch.equal(moved.y, test.y)
