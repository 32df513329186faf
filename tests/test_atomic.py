"""Atomic file writing under fault injection: writers that raise midway, failing fsync/rename, processes SIGKILLed
while writing large files, and many threads writing one destination."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from depth_anything_nb.core import files as atomic
from depth_anything_nb.core.files import (TEMP_TAG, atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text,
                                      remove_stale_temps, stale_temps)

ROOT = Path(__file__).resolve().parents[1]
OLD = b"the previous, complete version\n" * 1000


def _only(folder: Path, *names: str):
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


# ------------------------------------------------------------------ exceptions: the old file stays, no temporary
def _raw_writer(path):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(b"half of the new version")
        f.flush()
        raise RuntimeError("the writer died here")


def _torch_save(path):  # training.atomic_save: tensors are written before the object that fails to pickle
    import torch

    from depth_anything_nb.train.trainer import atomic_save

    atomic_save({"weights": torch.ones(1000), "bad": Unpicklable()}, path)


def _save_checkpoint(path):
    import torch

    from depth_anything_nb.models.checkpoints import save_checkpoint

    save_checkpoint({"weights": torch.ones(1000), "bad": Unpicklable()}, path)


def _hdf5(path):  # data.formats writers that hand the temporary's name to a library
    from depth_anything_nb.data.formats import write_hdf5

    write_hdf5(path, np.array([object()]))  # h5py cannot store Python objects


def _keyboard_interrupt(path):
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt


@pytest.mark.parametrize("writer", [_raw_writer, _torch_save, _save_checkpoint, _hdf5, _keyboard_interrupt])
def test_a_writer_failing_midway_leaves_the_old_file_byte_identical(tmp_path, writer):
    target = tmp_path / "out.bin"
    target.write_bytes(OLD)
    with pytest.raises(BaseException) as e:
        writer(target)
    assert not isinstance(e.value, (AssertionError, FileNotFoundError))  # the writer's own error comes through
    assert target.read_bytes() == OLD
    _only(tmp_path, "out.bin")


@pytest.mark.parametrize("broken", ["fsync", "replace"])
def test_failing_fsync_or_rename_leaves_the_old_file(tmp_path, monkeypatch, broken):
    "An I/O error at fsync, or Windows refusing to replace an open file, must not lose the old version."
    target = tmp_path / "out.json"
    target.write_bytes(OLD)
    error = OSError(5, "Input/output error") if broken == "fsync" else PermissionError(13, "file in use")

    def fail(*args):
        raise error

    monkeypatch.setattr(atomic.os, broken, fail)
    with pytest.raises(OSError) as e:
        atomic_write_json(target, {"new": True})
    assert e.value is error and target.read_bytes() == OLD
    _only(tmp_path, "out.json")


def test_fsync_flushes_file_and_folder_unless_disabled(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    atomic_write_bytes(tmp_path / "a", b"x")
    assert len(calls) == (1 if os.name == "nt" else 2)  # the file, then (POSIX) its folder
    calls.clear()
    atomic_write_bytes(tmp_path / "b", b"x", fsync=False)
    assert calls == []


# ------------------------------------------------------------------ names: suffixes, uniqueness, stale temporaries
def test_the_temporary_keeps_the_suffix_that_format_sniffing_writers_need(tmp_path):
    import cv2

    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    with atomic_path(tmp_path / "im.png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".im.png" + TEMP_TAG) and tmp.suffix == ".png"
        assert cv2.imwrite(str(tmp), img)  # OpenCV picks the codec from the suffix
    assert np.array_equal(cv2.imread(str(tmp_path / "im.png")), img)
    with atomic_path(tmp_path / "d.npy") as tmp:
        np.save(tmp, img)  # np.save appends .npy unless the name already ends with it
    assert np.array_equal(np.load(tmp_path / "d.npy"), img)
    _only(tmp_path, "im.png", "d.npy")


def test_a_writer_that_writes_elsewhere_is_an_error_naming_the_destination(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"e\.npy.*suffix"):
        with atomic_path(tmp_path / "e.npy", suffix="") as tmp:
            np.save(tmp, np.zeros(2))  # went to tmp + ".npy"
    assert not (tmp_path / "e.npy").exists()


def test_text_is_utf8_without_newline_translation_and_folders_are_created(tmp_path):
    p = atomic_write_text(tmp_path / "a" / "b" / "t.txt", "ü\r\nx\n")
    assert p.read_bytes() == "ü\r\nx\n".encode()


def test_public_names_are_importable_from_their_old_modules():
    import depth_anything_nb
    from depth_anything_nb.models import inference
    from depth_anything_nb.train import trainer as training
    from depth_anything_nb.data import formats

    assert inference.atomic_output is formats.atomic_path is atomic_path
    assert inference.atomic_write_bytes is atomic_write_bytes and depth_anything_nb.atomic_write_bytes is atomic_write_bytes
    assert depth_anything_nb.atomic_output is atomic_path and callable(training.atomic_save)


def test_stale_temps_are_found_by_destination_pattern(tmp_path):
    keep = tmp_path / ".notes.txt"
    keep.write_text("a hidden file that is not a temporary")
    for name in ("ckpt_00000010.pt", "labels-r00001-000003.tar"):
        atomic._temp_path(tmp_path / name, suffix="").write_bytes(b"left by a killed writer")
    assert [p.name.split(TEMP_TAG)[0] for p in stale_temps(tmp_path, "ckpt_*.pt")] == [".ckpt_00000010.pt"]
    assert len(remove_stale_temps(tmp_path, "labels-r00001-*")) == 1
    assert len(remove_stale_temps(tmp_path)) == 1
    _only(tmp_path, ".notes.txt")


# ------------------------------------------------------------------ SIGKILL: the old or the new file, never a partial one
SIZE = 4 << 20  # bytes per version
CHILD = textwrap.dedent(
    """
    import sys
    from depth_anything_nb.core.files import atomic_path

    path, size, announce = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    version = 1
    while True:  # rewrite the file, version after version, until killed
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            chunk = bytes([version % 251]) * (64 << 10)
            for k in range(size // len(chunk)):
                f.write(chunk)
                if announce and version == 1 and k == 8:
                    f.flush()
                    print("mid-write", flush=True)
                    sys.stdin.readline()  # wait here until killed
        version += 1
    """
)


def _start(path: Path, announce: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(SIZE), str(int(announce))], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _is_one_complete_version(data: bytes) -> bool:
    return len(data) == SIZE and data == data[:1] * SIZE


def test_sigkill_mid_write_leaves_the_old_file_and_a_recognisable_temporary(tmp_path):
    target = tmp_path / "big.bin"
    target.write_bytes(OLD)
    child = _start(target, announce=True)
    try:
        assert child.stdout.readline() == "mid-write\n"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
        child.stdin.close(), child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert target.read_bytes() == OLD  # byte-identical
    (left,) = stale_temps(tmp_path, "big.bin")  # hidden, named after its destination and the writer's pid
    assert left.name.startswith(f".big.bin{TEMP_TAG}{child.pid}-") and 0 < left.stat().st_size < SIZE
    assert remove_stale_temps(tmp_path, "big.bin") == [left]
    _only(tmp_path, "big.bin")


def test_sigkill_at_arbitrary_moments_leaves_a_complete_version(tmp_path):
    "Kill a process that rewrites a 4 MB file over and over, at arbitrary moments: the file is always one whole version."
    target, rng, mid_write = tmp_path / "big.bin", np.random.default_rng(0), 0
    for attempt in range(5):
        target.write_bytes(b"\0" * SIZE)
        child = _start(target, announce=False)
        try:
            for _ in range(2000):  # until the child has replaced the file at least once (≤ 20 s)
                with open(target, "rb") as f:
                    if f.read(1) != b"\0":
                        break
                threading.Event().wait(0.01)
            threading.Event().wait(rng.uniform(0, 0.05))
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(30)
            child.stdin.close(), child.stdout.close()
        data = target.read_bytes()
        assert data[0] != 0 and _is_one_complete_version(data), f"attempt {attempt}: a partial file is visible"
        left = stale_temps(tmp_path, "big.bin")
        assert len(left) <= 1  # at most the one being written when killed
        mid_write += len(left)
        remove_stale_temps(tmp_path, "big.bin")
    assert mid_write > 0  # the kills did land in the middle of writes (writing is nearly all the child does)


# ------------------------------------------------------------------ threads: one destination, many writers
def test_threads_writing_one_destination_end_with_one_complete_version(tmp_path):
    target, names, errors = tmp_path / "shared.bin", [], []
    payloads = [bytes([i]) * (256 << 10) for i in range(8)]
    barrier = threading.Barrier(len(payloads))

    def write(data: bytes):
        try:
            barrier.wait()
            for _ in range(3):
                with atomic_path(target) as tmp, open(tmp, "wb") as f:
                    names.append(tmp.name)
                    for k in range(0, len(data), 4096):
                        f.write(data[k : k + 4096])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(names)) == len(names) == 24  # no two writers ever shared a temporary
    assert target.read_bytes() in payloads
    _only(tmp_path, "shared.bin")
