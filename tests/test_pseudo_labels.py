"""Pseudo-label store: encodings, atomic shards under SIGKILL and exceptions, resumption, DDP ranks, the student's join."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depth_anything_nb.data.core import DatasetError, make_sample
from depth_anything_nb.data.pseudo_labels import (
    PseudoLabeledDataset,
    PseudoLabeledStream,
    PseudoLabelStore,
    PseudoLabelWriter,
    decode_label,
    encode_label,
    rank_of,
    write_pseudo_labels,
)

ROOT = Path(__file__).resolve().parents[1]
KEYS = [f"shard-{i // 7:02d}/img {i:03d}.v2.jpg" for i in range(30)]  # dots, spaces and slashes in keys


def label_for(key: str) -> np.ndarray:
    "A deterministic smooth 'prediction' per key (its values depend on the key only)."
    i = KEYS.index(key)
    y, x = np.mgrid[0:20, 0:28].astype(np.float32)
    return (np.sin(x / (3 + i % 5)) + np.cos(y / 4) + i * 0.1 + 2).astype(np.float32)


def write_all(root, keys=KEYS, **kw):
    with PseudoLabelWriter(root, **kw) as w:
        for k in w.todo(keys):
            w.add(k, label_for(k))
    return w


def files(root) -> dict:
    return {p.name: p.read_bytes() for p in sorted(Path(root).iterdir())}


# ------------------------------------------------------------------ encodings
@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), scale=st.floats(1e-3, 1e4), offset=st.floats(-1e3, 1e3),
       seed=st.integers(0, 2**16))
def test_png16_error_is_bounded_by_the_quantisation_step(h, w, scale, offset, seed):
    x = (np.random.default_rng(seed).random((h, w)) * scale + offset).astype(np.float32)
    y = decode_label(*encode_label(x, "png16"))
    step = (float(x.max()) - float(x.min())) / 65535
    float32_rounding = 2 * np.finfo(np.float32).eps * np.abs(x).max()
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.abs(y - x).max() <= step / 2 + float32_rounding + 1e-12


def test_encodings_round_trip_and_reject_bad_input():
    x = np.linspace(0, 80, 600, dtype=np.float32).reshape(20, 30)
    assert np.array_equal(decode_label(*encode_label(np.full((3, 4), 2.5, np.float32))), np.full((3, 4), 2.5))
    assert np.abs(decode_label(*encode_label(x, "float16")) - x).max() <= 80 * 2**-11
    assert np.abs(decode_label(*encode_label(x, "png16-x256")) - x).max() <= 1 / 512 + 1e-6
    bad = x.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        encode_label(bad)
    with pytest.raises(ValueError, match="H×W"):
        encode_label(np.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match="unknown encoding"):
        encode_label(x, "jpeg")


# ------------------------------------------------------------------ atomicity and resumption
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_pseudo_labels import KEYS, label_for
    from depth_anything_nb.data.pseudo_labels import PseudoLabelWriter

    root, kill_at = sys.argv[1], int(sys.argv[2])

    class KilledWhileWriting(PseudoLabelWriter):
        calls = 0

        def _add_member(self, tar, name, data):
            KilledWhileWriting.calls += 1
            if KilledWhileWriting.calls == kill_at:
                tar.fileobj.flush()  # part of the shard is on disk when the process dies
                os.kill(os.getpid(), signal.SIGKILL)
            return super()._add_member(tar, name, data)

    with KilledWhileWriting(root, shard_size=4) as w:
        for k in w.todo(KEYS):
            w.add(k, label_for(k))
    """
)


def run_child(script: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, capture_output=True, text=True, timeout=120)


def test_sigkill_during_a_shard_leaves_no_partial_shard_and_resumes_identically(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    write_all(clean, shard_size=4)
    # 2 members per sample, 4 samples per shard: call 21 is inside the third shard
    proc = run_child(CHILD.format(tests=str(Path(__file__).parent)), killed, 21)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    visible = sorted(p.name for p in killed.iterdir() if not p.name.startswith("."))
    assert visible == ["labels-r00000-000000.tar", "labels-r00000-000000.tar.idx.json",
                       "labels-r00000-000001.tar", "labels-r00000-000001.tar.idx.json"]
    assert len(list(killed.glob(".labels-r00000-000002.tar.tmp-*"))) == 1  # the half-written shard, hidden
    store = PseudoLabelStore(killed)
    assert sorted(store.keys()) == sorted(KEYS[:8]) and all(np.allclose(store[k], label_for(k), atol=1e-3) for k in KEYS[:8])
    w = write_all(killed, shard_size=4)  # the restart
    assert w.written == len(KEYS) - 8
    assert files(killed) == files(clean)  # byte-identical to the uninterrupted run, temp file gone


def test_an_exception_keeps_finished_work_and_resumes_to_the_same_content(tmp_path):
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    write_all(clean, shard_size=4)
    with pytest.raises(RuntimeError):
        with PseudoLabelWriter(crashed, shard_size=4) as w:
            for n, k in enumerate(w.todo(KEYS)):
                if n == 10:
                    raise RuntimeError("the teacher failed")
                w.add(k, label_for(k))
    assert len(PseudoLabelStore(crashed)) == 10 and not list(crashed.glob(".*"))
    write_all(crashed, shard_size=4)
    a, b = PseudoLabelStore(clean), PseudoLabelStore(crashed)
    assert sorted(a.keys()) == sorted(b.keys()) == sorted(KEYS)
    assert all(np.array_equal(a[k], b[k]) for k in KEYS)


def test_a_lost_index_is_rebuilt_from_the_shard(tmp_path):
    write_all(tmp_path, shard_size=8)
    idx = tmp_path / "labels-r00000-000001.tar.idx.json"
    original = json.loads(idx.read_text())
    idx.unlink()  # as if killed between the shard's rename and its index's
    store = PseudoLabelStore(tmp_path)
    assert len(store) == len(KEYS)
    assert {k: store.index[k][1] for k in original["entries"]} == original["entries"]
    assert PseudoLabelWriter(tmp_path, shard_size=8).todo(KEYS) == []


def test_corrupt_shard_bytes_are_reported_with_the_file_and_key(tmp_path):
    write_all(tmp_path, shard_size=100)
    store = PseudoLabelStore(tmp_path)
    shard, entry = store.index[KEYS[3]]
    data = bytearray(shard.read_bytes())
    data[entry["offset"] : entry["offset"] + 40] = b"\0" * 40
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="undecodable.*") as e:
        PseudoLabelStore(tmp_path)[KEYS[3]]
    assert KEYS[3] in str(e.value) and shard.name in str(e.value)


def test_duplicate_keys_and_bad_predictions_are_refused(tmp_path):
    w = PseudoLabelWriter(tmp_path, shard_size=10)
    w.add(KEYS[0], label_for(KEYS[0]))
    with pytest.raises(ValueError, match="already stored"):
        w.add(KEYS[0], label_for(KEYS[0]))
    with pytest.raises(ValueError, match=KEYS[1].replace(".", r"\.")):
        w.add(KEYS[1], np.full((4, 4), np.inf))
    with pytest.raises(ValueError, match="rank"):
        PseudoLabelWriter(tmp_path, rank=2, world_size=2)


# ------------------------------------------------------------------ DDP ranks
RANK = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_pseudo_labels import KEYS, write_all
    write_all(sys.argv[1], rank=int(sys.argv[2]), world_size=2, shard_size=3)
    """
)


def test_ranks_write_their_own_shards_concurrently(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = RANK.format(tests=str(Path(__file__).parent))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(r)], env=env) for r in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = PseudoLabelStore(tmp_path)
    assert sorted(store.keys()) == sorted(KEYS) and store.duplicates == 0
    for key in KEYS:  # each key is in a shard of the rank the hash partition assigns
        assert f"-r{rank_of(key, 2):05d}-" in store.index[key][0].name
    assert PseudoLabelWriter(tmp_path).todo(KEYS) == []  # a single-rank restart finds nothing to do


# ------------------------------------------------------------------ the student's side
class ImageSource:
    "A map-style source of unlabeled samples, one per key (no `key` method: keys come from the samples)."

    def __init__(self, keys, size=(20, 28)):
        self.keys, self.size = keys, size

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        if self.keys[i].endswith("broken.jpg"):
            raise DatasetError(self.keys[i], "not a JPEG file")
        img = np.full((*self.size, 3), i, np.uint8)
        return make_sample(img, path=self.keys[i], dataset="toy")


def test_dataset_joins_by_key_and_leaves_unlabelled_images_out(tmp_path):
    write_all(tmp_path, keys=KEYS[:20], shard_size=6)
    ds = PseudoLabeledDataset(ImageSource(KEYS), tmp_path)
    assert len(ds) == 20 and ds.missing == 10
    s = ds[5]
    assert s["path"] == KEYS[5] and s["depth_unit"] == "relative" and s["image"][0, 0, 0] == 5
    assert np.allclose(s["depth"], label_for(KEYS[5]), atol=1e-3) and s["valid"].all()
    big = PseudoLabeledDataset(ImageSource(KEYS, size=(40, 56)), tmp_path)[0]
    assert big["depth"].shape == (40, 56)  # resized (nearest) to the image
    with pytest.raises(DatasetError, match="does not match"):
        PseudoLabeledDataset(ImageSource(KEYS, size=(40, 56)), tmp_path, resize=False)[0]
    streamed = PseudoLabeledStream((ImageSource(KEYS)[i] for i in range(30)), tmp_path)
    assert len(list(streamed)) == 20 and streamed.missing == 10


def test_zero_is_a_valid_relative_label(tmp_path):
    with PseudoLabelWriter(tmp_path) as w:
        w.add(KEYS[0], np.array([[0.0, 1.0], [2.0, 0.0]], np.float32))
    s = PseudoLabeledDataset(ImageSource(KEYS[:1], size=(2, 2)), tmp_path)[0]
    assert s["valid"].all() and s["depth"][0, 0] == 0  # sky: infinitely far, inverse depth 0


def test_write_pseudo_labels_skips_unreadable_images_and_resumes(tmp_path, caplog):
    keys = KEYS[:12] + ["shard-9/broken.jpg"]
    source = ImageSource(keys)
    calls = []

    def teacher(samples):
        calls.append(len(samples))
        return [s["image"][..., 0].astype(np.float32) + np.arange(28, dtype=np.float32) for s in samples]

    stats = write_pseudo_labels(teacher, source, tmp_path, batch_size=5, shard_size=4, progress=False)
    assert stats == {"written": 12, "already_done": 0, "other_ranks": 0, "failed": 1}
    assert "shard-9/broken.jpg" in caplog.text
    again = write_pseudo_labels(teacher, source, tmp_path, batch_size=5, progress=False)
    assert again["written"] == 0 and again["already_done"] == 12 and sum(calls) == 12


class KeyedSource(ImageSource):
    "A source that knows its keys without loading images (like ProceduralDepthDataset.key)."

    def key(self, i):
        return self.keys[i]


def test_unreadable_images_found_while_labelling_are_counted(tmp_path, caplog):
    keys = KEYS[:5] + ["shard-9/broken.jpg"]
    teacher = lambda samples: [s["image"][..., 0].astype(np.float32) for s in samples]  # noqa: E731
    stats = write_pseudo_labels(teacher, KeyedSource(keys), tmp_path, batch_size=4, progress=False)
    assert stats == {"written": 5, "already_done": 0, "other_ranks": 0, "failed": 1}
    assert "skipping shard-9/broken.jpg" in caplog.text


class ReaderLike(ImageSource):
    "Like the data readers: `items` with paths and `item_path`; loading is counted."

    loads = 0

    @property
    def items(self):
        return [{"image": k} for k in self.keys]

    @staticmethod
    def item_path(item):
        return item["image"]

    def __getitem__(self, i):
        ReaderLike.loads += 1
        return super().__getitem__(i)


def test_reader_keys_come_from_items_without_loading_images(tmp_path):
    write_all(tmp_path, keys=KEYS[:10])
    ds = PseudoLabeledDataset(ReaderLike(KEYS), tmp_path)
    assert ReaderLike.loads == 0 and len(ds) == 10
    assert ds[3]["path"] == KEYS[3] and ReaderLike.loads == 1


def test_background_write_stores_the_same_labels_and_overlaps_the_teacher(tmp_path):
    "Batch i is written in a thread while the teacher runs batch i+1; the store is the one a synchronous run makes."
    import threading

    source = ImageSource(KEYS[:13])
    teacher_threads, write_threads = set(), set()
    real_add = PseudoLabelWriter.add

    def teacher(samples):
        teacher_threads.add(threading.get_ident())
        return [s["image"][..., 0].astype(np.float32) + np.arange(28, dtype=np.float32) for s in samples]

    def spy_add(self, key, pred):
        write_threads.add(threading.get_ident())
        return real_add(self, key, pred)

    stores = {}
    for background in (False, True):
        root = tmp_path / str(background)
        write_threads.clear()
        PseudoLabelWriter.add = spy_add
        try:
            stats = write_pseudo_labels(teacher, source, root, batch_size=4, shard_size=5, progress=False,
                                        background_write=background)
        finally:
            PseudoLabelWriter.add = real_add
        assert stats["written"] == 13
        assert (write_threads == teacher_threads) != background  # the writes ran on the caller's thread iff sync
        store = PseudoLabelStore(root)
        stores[background] = {k: store.read_bytes(k) for k in store.keys()}
    assert stores[True] == stores[False]


def test_background_write_error_surfaces_and_keeps_finished_shards(tmp_path):
    "A prediction the store refuses (non-finite) stops the run with the key named; shards written before stay valid."
    source = ImageSource(KEYS[:12])

    def teacher(samples):
        out = [s["image"][..., 0].astype(np.float32) for s in samples]
        if any(s["path"] == KEYS[9] for s in samples):
            out[-1] = np.full_like(out[-1], np.nan)
        return out

    with pytest.raises(ValueError, match="finite"):
        write_pseudo_labels(teacher, source, tmp_path, batch_size=4, shard_size=4, progress=False)
    store = PseudoLabelStore(tmp_path)
    assert 4 <= len(store) < 12 and all(store[k].shape == (20, 28) for k in store.keys())
