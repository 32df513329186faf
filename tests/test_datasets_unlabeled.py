"""Unlabeled images: folders and lists, the tar shard writer/packer (atomic, resumable) and the shard reader
(WebDataset layout; split over ranks and DataLoader workers; deterministic; exact resume)."""
import io
import json
import tarfile

import numpy as np
import pytest
import torch

from depth_anything_nb.data import formats as F
from depth_anything_nb.data.core import BadDataReport, DatasetError, collate_samples
from depth_anything_nb.data.unlabeled import (ImageFolder, ShardWriter, TarShards, list_images, pack_images,
                                              read_shard_index, resume_plan, split_member_name)


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(29):
        sub = ("a", "b/c", "d")[i % 3]
        F.write_rgb(root / sub / f"x.{i:03d}{('.jpg', '.png')[i % 2]}", rng.integers(0, 255, (4, 6, 3), dtype=np.uint8))
    (root / "readme.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def shards(image_tree, tmp_path_factory):
    "29 images in shards of 4 (the last has 1): uneven shard sizes per worker."
    out = tmp_path_factory.mktemp("shards")
    pack_images(image_tree, out, max_count=4, progress=False)
    return out


def test_image_folder_and_list(image_tree, tmp_path):
    ds = ImageFolder(image_tree)
    assert len(ds) == 29 and ds[0]["key"] == "a/x.000" and ds[0]["depth"] is None and ds[0]["depth_unit"] == "relative"
    (tmp_path / "l.txt").write_text(f"{image_tree}/d/x.002.jpg\n\n# comment\nb/c/x.001.png\n")
    keys = [k for _, k in list_images(tmp_path / "l.txt", root=image_tree)]
    assert keys == [f"{image_tree.as_posix()}/d/x.002", "b/c/x.001"]
    assert np.array_equal(ImageFolder(tmp_path / "l.txt", root=image_tree)[1]["image"],
                          F.read_rgb(image_tree / "b/c/x.001.png"))


def test_member_names():
    assert split_member_name("dir/sub/img_001.jpg") == ("dir/sub/img_001", "jpg")
    assert split_member_name("k.depth.PNG") == ("k", "depth.png")


def test_pack_layout_index_and_resume(image_tree, shards, tmp_path):
    index = read_shard_index(shards)
    assert [s["count"] for s in index["shards"]] == [4] * 7 + [1] and index["shards"][-1]["next_source"] == 29
    with tarfile.open(shards / "shard-000000.tar") as tf:
        names = tf.getnames()
        meta = json.loads(tf.extractfile("a/x_000.json").read())
    assert names[:4] == ["a/x_000.jpg", "a/x_000.json", "a/x_003.png", "a/x_003.json"] and meta == {"path": "a/x.000.jpg"}
    # a killed run: the first 3 shards are done; the rerun reproduces the rest byte for byte
    part = tmp_path / "part"
    pack_images(image_tree, part, max_count=4, progress=False)
    full = {p.name: p.read_bytes() for p in part.glob("*.tar")}
    for p in sorted(part.glob("*.tar"))[3:]:
        p.unlink()
    (part / "shards.json").write_text(json.dumps({"shards": read_shard_index(part)["shards"][:3]}))
    pack_images(image_tree, part, max_count=4, progress=False)
    assert {p.name: p.read_bytes() for p in part.glob("*.tar")} == full


def test_shard_writer_is_atomic(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, max_count=10) as w:
            w.write("k1", {"jpg": b"x"})
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []  # no partial shard, no index
    with pytest.raises(ValueError, match="no dot"):
        ShardWriter(tmp_path).write("a.b", {"jpg": b""})


def test_reader_deterministic_and_complete(shards):
    ds = TarShards(shards, seed=1)
    keys = [s["key"] for s in ds]
    assert len(keys) == 29 == len(set(keys)) and keys == [s["key"] for s in TarShards(shards, seed=1)]
    assert keys != [s["key"] for s in TarShards(shards, seed=2)]
    ds.set_epoch(1)
    assert sorted(s["key"] for s in ds) == sorted(keys) and [s["key"] for s in ds] != keys
    s = next(iter(TarShards(shards, shuffle=False)))
    assert s["key"] == "a/x_000" and s["json"] == {"path": "a/x.000.jpg"} and s["image"].shape == (4, 6, 3)
    assert s["path"].endswith("shard-000000.tar#a/x_000")


@pytest.mark.parametrize("world,workers", [(1, 3), (2, 2), (3, 1)])
def test_split_over_ranks_and_workers_is_a_partition(shards, world, workers):
    ds = TarShards(shards, seed=5)
    parts = [ds.shards_for(0, r, world, w, workers) for r in range(world) for w in range(workers)]
    flat = [p for part in parts for p in part]
    assert sorted(flat) == sorted(ds.shards)


def _loader_keys(ds, workers, bs, drop_last=False, limit=None):
    dl = torch.utils.data.DataLoader(ds, batch_size=bs, num_workers=workers, collate_fn=collate_samples,
                                     drop_last=drop_last)
    out = []
    for b in dl:
        out.append(b["key"])
        if limit and len(out) == limit:
            break
    return out


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers,bs,start", [(2, 3, 4), (3, 2, 7), (2, 5, 5)])
def test_resume_matches_uninterrupted_loader(shards, workers, bs, start):
    "The real DataLoader (round robin over workers that run dry at different times) resumed mid-epoch."
    full = _loader_keys(TarShards(shards, seed=7, rank=1, world_size=2), workers, bs)
    resumed = _loader_keys(TarShards(shards, seed=7, rank=1, world_size=2, start_batch=start, batch_size=bs), workers, bs)
    assert resumed == full[start:]


def test_resume_endless_stream(shards):
    full = _loader_keys(TarShards(shards, seed=3, repeat=True), 2, 3, limit=25)
    resumed = _loader_keys(TarShards(shards, seed=3, repeat=True, start_batch=11, batch_size=3), 2, 3, limit=14)
    assert resumed == full[11:]
    assert len({k for b in full for k in b}) == 29  # several epochs went by


def test_resume_plan_model():
    "Workers with 3, 1 and 2 batches: turns go 0 1 2 0 2 0; after 4 turns worker 2 is next, then 0."
    assert resume_plan([3, 1, 2], 0)[0] == (0, 0)
    assert resume_plan([3, 1, 2], 4) == [(2, 1), (0, 2), (1, 1)]
    assert resume_plan([3, 1, 2], 6) == [(0, 3), (1, 1), (2, 2)]  # all done


def test_repeat_needs_enough_shards(shards):
    with pytest.raises(DatasetError, match="at least"):
        next(iter(TarShards(list(sorted(shards.glob("*.tar")))[:1], repeat=True, rank=0, world_size=2)))


def _tar(path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_bad_images_and_shards_are_logged_skipped_counted(image_tree, tmp_path, caplog):
    good = (image_tree / "a/x.000.jpg").read_bytes()
    _tar(tmp_path / "s0.tar", [("k1.jpg", good), ("k2.jpg", b"\xff\xd8garbage"), ("k3.txt", b"no image"),
                               ("k4.jpg", good)])
    with tarfile.open(tmp_path / "s0.tar") as tf:
        cut = tf.getmember("k2.jpg").offset_data + 4
    (tmp_path / "s1.tar").write_bytes((tmp_path / "s0.tar").read_bytes()[:cut])  # truncated inside k2's data
    caplog.set_level("WARNING")
    report, keys = BadDataReport(), []
    for shard in ("s0.tar", "s1.tar"):
        for shuffle in (False, True):
            # the counts must survive worker processes (logs there go to their stderr, not to caplog)
            for b in torch.utils.data.DataLoader(TarShards(tmp_path / shard, shuffle=shuffle), batch_size=1,
                                                 num_workers=int(shuffle), collate_fn=collate_samples):
                report.add(b)
                keys += b["key"]
    assert sorted(keys) == ["k1"] * 4 + ["k4"] * 2
    assert "s0.tar#k2" in caplog.text and "no image member" in caplog.text  # from the in-process runs
    assert any(p.endswith("s0.tar#k2") for p in report.problems)
    # every skip reached the main process, including those after the last good sample of a stream
    assert report.events == 6 and any(p.endswith("s1.tar") for p in report.problems), report


def test_shard_samples_collate_and_raw_mode(image_tree, shards):
    b = collate_samples([s for _, s in zip(range(3), TarShards(shards, shuffle=False))])
    assert b["image"].shape == (3, 4, 6, 3) and b["depth"] is None and b["skipped"] == []
    raw = next(iter(TarShards(shards, shuffle=False, decode=False)))
    assert raw["image"] == (image_tree / "a/x.000.jpg").read_bytes()
