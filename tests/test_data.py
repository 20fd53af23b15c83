"""bncourse.data: offline loading, verification, error messages, batching."""

import errno
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


def test_recorded_extracted_checksums_match_the_archives_and_readme():
    readme = (REPO / "data" / "README.md").read_text()
    for name in data.DATASET_CLASSES:
        extracted = data.extracted_files(name)
        assert sorted(extracted) == sorted(f[: -len(".gz")] for f in data.expected_files(name))
        for filename, sha in extracted.items():
            blob = gzip.decompress((REPO / "data" / name / "raw" / f"{filename}.gz").read_bytes())
            assert hashlib.sha256(blob).hexdigest() == sha
            assert re.search(rf"{name}/raw/{re.escape(filename)}\s*\|\s*`?{sha}", readme), f"README lacks {name}/{filename}"


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


def _kill_mid_extraction(root, signal_number=9):
    """Run ``verify`` in a subprocess that is killed by ``signal_number`` after writing 1 MB of an extracted file."""
    script = textwrap.dedent(
        f"""
        import os, shutil
        from bncourse import data
        def dying_copy(src, dst, length=0):
            dst.write(src.read(1 << 20))
            dst.flush()
            os.kill(os.getpid(), {signal_number})
        shutil.copyfileobj = dying_copy
        data.verify("MNIST", {str(root)!r})
        """
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True)


def test_killed_extraction_leaves_nothing_accepted_and_is_cleaned_up(copy_of):
    """SIGKILL in the middle of extracting: no target file; the next run removes the temporary file."""
    root, raw = copy_of()
    proc = _kill_mid_extraction(root)
    assert proc.returncode == -9, proc.stderr.decode()
    assert not (raw / "train-images-idx3-ubyte").exists()
    leftovers = [p for p in raw.iterdir() if ".bncourse-tmp-" in p.name]
    assert leftovers, "the partial file should be a temporary name, never the target"
    data.verify("MNIST", root)  # a later run removes it, extracts afresh and accepts
    assert not [p for p in raw.iterdir() if ".bncourse-tmp-" in p.name], "stale temporary file left behind"
    assert data.torchvision_dataset("MNIST", train=True, root=root).data.shape == (60000, 28, 28)


def test_stale_temporary_file_removed_even_when_the_target_exists(copy_of):
    root, raw = copy_of()
    data.verify("MNIST", root)
    stale = raw / ("t10k-images-idx3-ubyte.bncourse-tmp-" + "0123456789abcdef" * 2)
    stale.write_bytes(b"\0" * 1000)
    unrelated = raw / "notes.part-of-my-homework.txt"  # a user's file that only looks similar
    unrelated.write_text("mine")
    data.verify("MNIST", root)
    assert not stale.exists() and unrelated.read_text() == "mine"


@pytest.mark.parametrize("method", ["verify", "load_tensors"])
def test_user_files_named_like_old_temporaries_are_never_deleted(copy_of, method):
    """Issue 25: a learner's notes or a `split` output next to an extracted file must survive; only the
    package's own temporary names (a 32-hex-digit token) are ever removed."""
    root, raw = copy_of()
    data.verify("MNIST", root)
    users = {
        raw / "train-labels-idx1-ubyte.part-notes.txt": b"my notes",
        raw / "train-images-idx3-ubyte.part-aa": b"split output",
        raw / "t10k-images-idx3-ubyte.part-k1ll3d00": b"looks like an old temporary",
        raw / "t10k-labels-idx1-ubyte.bncourse-tmp-mine.txt": b"close, but not our name",
        raw / ("t10k-labels-idx1-ubyte.bncourse-tmp-" + "ab" * 16 + ".txt"): b"a suffix after the token",
    }
    for path, content in users.items():
        path.write_bytes(content)
    (raw / "train-images-idx3-ubyte").unlink()  # forces a fresh extraction, which cleans up
    if method == "verify":
        data.verify("MNIST", root)
    else:
        data.load_tensors("MNIST", "test", root=root)
        data.verify("MNIST", root)
    for path, content in users.items():
        assert path.read_bytes() == content, f"{path.name} was deleted or changed"


def _zero_100kb(path):
    with open(path, "r+b") as fh:
        fh.seek(1_000_000)
        fh.write(bytes(100_000))


@pytest.mark.parametrize("damage", ["zeroed 100 kB", "Fashion-MNIST copied over", "same size, mtime kept"])
def test_corrupted_extracted_file_same_size_is_reported_not_replaced(copy_of, damage):
    root, raw = copy_of()
    data.verify("MNIST", root)
    extracted = raw / "train-images-idx3-ubyte"
    stat = extracted.stat()
    if damage == "zeroed 100 kB":
        _zero_100kb(extracted)
    else:
        fashion = gzip.decompress((REPO / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").read_bytes())
        extracted.write_bytes(fashion)
        if damage == "same size, mtime kept":
            os.utime(extracted, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert extracted.stat().st_size == stat.st_size
    damaged = extracted.read_bytes()
    for load in (lambda: data.verify("MNIST", root), lambda: data.load_tensors("MNIST", "test", root=root)):
        with pytest.raises(DataFileError) as err:
            load()
        msg = str(err.value)
        assert str(extracted) in msg and data.extracted_files("MNIST")[extracted.name] in msg
        assert "incomplete or corrupted" in msg and "Delete it" in msg
    assert extracted.read_bytes() == damaged, "the file must not be overwritten"


def test_torchvision_processed_cache_is_ignored_with_a_warning(copy_of):
    """A stale cache from an older torchvision (here: NaN images) must never replace the verified files."""
    root, raw = copy_of()
    processed = root / "MNIST" / "processed"
    processed.mkdir()
    for filename, n in (("training.pt", 60000), ("test.pt", 10000)):
        torch.save((torch.full((n, 28, 28), float("nan")), torch.zeros(n, dtype=torch.long)), processed / filename)
    before = {p.name: p.read_bytes() for p in processed.iterdir()}
    with pytest.warns(data.IgnoredCacheWarning, match="ignoring torchvision's cache"):
        test = data.load_tensors("MNIST", "test", root=root)
    assert torch.isfinite(test.x).all()
    assert torch.equal(test.y, data.load_tensors("MNIST", "test").y)
    assert data.torchvision_dataset("MNIST", train=True, root=root).data.dtype == torch.uint8
    assert {p.name: p.read_bytes() for p in processed.iterdir()} == before, "the cache must not be touched"


def test_in_memory_cache_notices_a_changed_file(copy_of):
    root, raw = copy_of()
    good = data.load_tensors("MNIST", "test", root=root)
    extracted = raw / "t10k-images-idx3-ubyte"
    stat = extracted.stat()
    _zero_100kb(extracted)
    os.utime(extracted, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: still noticed
    with pytest.raises(DataFileError, match="incomplete or corrupted"):
        data.load_tensors("MNIST", "test", root=root)
    extracted.unlink()  # the fix the error names
    again = data.load_tensors("MNIST", "test", root=root)
    assert torch.equal(again.x, good.x) and torch.equal(again.y, good.y)


def test_extracted_files_get_the_umask_permissions(copy_of):
    root, raw = copy_of()
    old = os.umask(0o022)
    try:
        data.verify("MNIST", root)
    finally:
        os.umask(old)
    for filename in data.extracted_files("MNIST"):
        assert (raw / filename).stat().st_mode & 0o777 == 0o644, filename


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_read_only_folder_gives_the_fix_and_leaves_nothing(copy_of, monkeypatch, code):
    """We run as root, who may write anywhere: the read-only folder is simulated at os.open."""
    root, raw = copy_of()
    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and Path(path).parent == raw:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    before = sorted(p.name for p in raw.iterdir())
    with pytest.raises(DataFileError) as err:
        data.load_tensors("MNIST", "train", root=root)
    msg = str(err.value)
    assert str(raw / "train-images-idx3-ubyte") in msg and "not writable" in msg
    assert "root" in msg and data.DATA_DIR_ENV in msg and "cp -r" in msg
    assert sorted(p.name for p in raw.iterdir()) == before


def _without_write_permission_override() -> list[str] | None:
    """A command prefix under which the file-permission bits apply (root ignores them), or None."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"] if setpriv else None


def test_read_only_folder_for_real(copy_of):
    """A folder without write permission, with the permission bits enforced (as a user, or root without override)."""
    prefix = _without_write_permission_override()
    if prefix is None:
        pytest.skip("running as root without setpriv: permission bits cannot be enforced")
    root, raw = copy_of()
    load = "import sys\nfrom bncourse import data\ndata.load_tensors('MNIST', 'test', root=sys.argv[1])\nprint('loaded')"
    raw.chmod(0o555)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-c", load, str(root)], capture_output=True, text=True)
        assert proc.returncode != 0 and "DataFileError" in proc.stderr and "not writable" in proc.stderr, proc.stderr
        assert sorted(p.name for p in raw.iterdir()) == sorted(data.expected_files("MNIST"))
        raw.chmod(0o755)
        data.verify("MNIST", root)  # extracted once by someone who may write there ...
        raw.chmod(0o555)
        proc = subprocess.run([*prefix, sys.executable, "-c", load, str(root)], capture_output=True, text=True)
        assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr  # ... the folder serves read-only
    finally:
        raw.chmod(0o755)


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_failed_extraction_removes_its_temporary_file(copy_of, monkeypatch, failure):
    root, raw = copy_of()

    def failing_copy(src, dst, length=0):
        dst.write(src.read(1 << 20))
        dst.flush()
        raise failure

    monkeypatch.setattr(shutil, "copyfileobj", failing_copy)
    with pytest.raises(DataFileError if isinstance(failure, OSError) else KeyboardInterrupt) as err:
        data.verify("MNIST", root)
    if isinstance(failure, OSError):
        assert "no space left" in str(err.value) and str(raw / "train-images-idx3-ubyte") in str(err.value)
    assert sorted(p.name for p in raw.iterdir()) == sorted(data.expected_files("MNIST")), "nothing may be left"


_LOAD_AND_HASH = """
import hashlib, sys
from bncourse import data
test = data.load_tensors("MNIST", "test", root=sys.argv[1])
print(hashlib.sha256(test.x.numpy().tobytes()).hexdigest())
"""


def test_concurrent_loaders_both_succeed(copy_of):
    root, raw = copy_of()
    procs = [subprocess.Popen([sys.executable, "-c", _LOAD_AND_HASH, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode() for _, err in outs]
    assert outs[0][0] == outs[1][0]
    assert sorted(p.name for p in raw.iterdir()) == sorted([*data.expected_files("MNIST"), *data.extracted_files("MNIST")])


def test_a_running_extraction_is_not_disturbed_by_a_second_loader(copy_of):
    """A slow extraction holds the lock; a loader started meanwhile waits, then uses its result."""
    root, raw = copy_of()
    slow = textwrap.dedent(
        f"""
        import shutil, sys, time
        from bncourse import data
        real = shutil.copyfileobj
        def slow_copy(src, dst, length=0):
            dst.write(src.read(1 << 20)); dst.flush()
            print("writing", flush=True)
            time.sleep(1.5)
            real(src, dst, length)
        shutil.copyfileobj = slow_copy
        data.verify("MNIST", {str(root)!r})
        """
    )
    first = subprocess.Popen([sys.executable, "-c", slow], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert first.stdout.readline().strip() == b"writing"
    assert [p for p in raw.iterdir() if ".bncourse-tmp-" in p.name], "the first extraction should be under way"
    second = subprocess.run([sys.executable, "-c", _LOAD_AND_HASH, str(root)], capture_output=True)
    assert second.returncode == 0, second.stderr.decode()
    assert first.wait() == 0, first.stderr.read().decode()
    assert not [p for p in raw.iterdir() if ".bncourse-tmp-" in p.name]
    data.verify("MNIST", root)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_tensors("CIFAR")
    with pytest.raises(TypeError, match="string"):
        data.expected_files(3)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        data.load_tensors("MNIST", "validation")
    with pytest.raises(TypeError, match="train must be True or False"):
        data.torchvision_dataset("MNIST", train="yes")
    with pytest.raises(TypeError, match="root must be a path"):
        data.load_tensors("MNIST", "test", root=3)


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
