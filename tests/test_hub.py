"""Released weights by name (nbs/12a_hub_weights.ipynb): the real `huggingface_hub` download and cache code path.

No test here reaches the network. The cache is laid out on disk exactly as huggingface_hub lays it out
(`models--org--name/{blobs,refs/main,snapshots/<commit>/<file>}`, snapshot files as relative symlinks to blobs named by
their ETag), or filled by huggingface_hub itself from a local HTTP server that answers the Hub's resolve protocol
(`HEAD`/`GET /{repo}/resolve/{revision}/{file}`, LFS files redirected to a second "CDN" server with `X-Repo-Commit`,
`X-Linked-Etag`, `X-Linked-Size`, as huggingface.co does). The releases point at a `mini-t` model: the official layout
and the transformers layout, a few hundred kB, so each test takes well under a second of compute.
"""
import hashlib
import http.server
import io
import json
import os
import threading

import pytest
import torch

from depth_anything_nb.models import checkpoints, hub
from depth_anything_nb.models.checkpoints import CheckpointError, save_checkpoint, to_hf_state_dict
from depth_anything_nb.models.registry import load_model
from depth_anything_nb.models.dpt import DepthAnythingV2

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OFFICIAL = hub.Release("test-org/Tiny-Depth", "depth_anything_v2_mini_t.pth", "mini-t", None, "official")
HF = hub.Release("test-org/Tiny-Depth-Metric-hf", "model.safetensors", "mini-t", 20.0, "hf")


@pytest.fixture
def env(tmp_path, monkeypatch):
    "An empty hub cache in HF_HUB_CACHE; no proxy; offline mode off unless a test turns it on."
    from huggingface_hub import constants

    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # in case the suite was started with HF_HUB_OFFLINE=1
    return cache


def _mini_model(max_depth=None, encoder="mini-t", seed=0):
    torch.manual_seed(seed)
    return DepthAnythingV2.from_config(encoder, max_depth=max_depth).eval()


def _pth_bytes(model) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def _safetensors_bytes(sd) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in sd.items()})


def _hf_files(model) -> dict[str, bytes]:
    config = {"model_type": "depth_anything", "depth_estimation_type": "metric", "max_depth": 20}
    return {"model.safetensors": _safetensors_bytes(to_hf_state_dict(model)),
            "config.json": json.dumps(config).encode()}


def _etag(filename: str, data: bytes) -> str:
    "What the Hub uses: the SHA-256 for LFS files (weights), the git blob SHA-1 for small files."
    if filename.endswith((".pth", ".safetensors", ".bin")):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lay_out_cache(cache, repo_id: str, files: dict[str, bytes], commit: str = COMMIT):
    "Write `files` into `cache` the way huggingface_hub stores a download of `repo_id` at `commit` (branch main)."
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        etag = _etag(name, data)
        (repo / "blobs" / etag).write_bytes(data)
        os.symlink(os.path.join("..", "..", "blobs", etag), repo / "snapshots" / commit / name)
    return repo


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------- the release table


def test_release_table_names_the_official_files():
    "Repository ids and file names as the official README and metric_depth/README link them."
    small = hub.RELEASES["depth-anything/Depth-Anything-V2-Small"]
    assert (small.filename, small.encoder, small.max_depth, small.dialect, small.license) == \
        ("depth_anything_v2_vits.pth", "vits", None, "official", "Apache-2.0")
    hyp = hub.RELEASES["depth-anything/Depth-Anything-V2-Metric-Hypersim-Large"]
    assert (hyp.filename, hyp.max_depth, hyp.license) == ("depth_anything_v2_metric_hypersim_vitl.pth", 20.0,
                                                          "CC-BY-NC-4.0")
    vk = hub.RELEASES["depth-anything/Depth-Anything-V2-Metric-VKITTI-Base"]
    assert (vk.filename, vk.max_depth) == ("depth_anything_v2_metric_vkitti_vitb.pth", 80.0)
    out_hf = hub.RELEASES["depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf"]
    assert (out_hf.filename, out_hf.encoder, out_hf.max_depth, out_hf.dialect) == ("model.safetensors", "vits", 80.0, "hf")
    assert small.url("https://huggingface.co") == \
        "https://huggingface.co/depth-anything/Depth-Anything-V2-Small/resolve/main/depth_anything_v2_vits.pth"
    assert len(hub.RELEASES) == 18 and not any(r.encoder == "vitg" for r in hub.RELEASES.values())  # Giant: unreleased
    for r in hub.RELEASES.values():  # every file name says its encoder and range
        if r.dialect == "official":
            kind = "" if r.max_depth is None else {20.0: "metric_hypersim_", 80.0: "metric_vkitti_"}[r.max_depth]
            assert r.filename == f"depth_anything_v2_{kind}{r.encoder}.pth"


def test_release_for():
    assert hub.release_for("vits").repo_id == "depth-anything/Depth-Anything-V2-Small"
    assert hub.release_for("vitl", 20).filename == "depth_anything_v2_metric_hypersim_vitl.pth"
    assert hub.release_for("vitb", max_depth=80.0).repo_id == "depth-anything/Depth-Anything-V2-Metric-VKITTI-Base"
    assert hub.release_for("vits", dialect="hf").repo_id == "depth-anything/Depth-Anything-V2-Small-hf"
    assert hub.release_for("Depth-Anything-V2-Large-hf").dialect == "hf"  # the org prefix is optional
    assert hub.release_for("depth-anything/depth-anything-v2-small").filename == "depth_anything_v2_vits.pth"
    for nothing in [("vitg",), ("mini-s",), ("vits", 10), ("nonsense/repo",)]:
        assert hub.release_for(*nothing) is None
    with pytest.raises(ValueError, match="relative-depth"):
        hub.release_for("depth-anything/Depth-Anything-V2-Small", max_depth=20)


# ---------------------------------------------------------------------------------------- a cache laid out by hand


def test_offline_official_release_from_cache(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _mini_model()
    lay_out_cache(env, OFFICIAL.repo_id, {OFFICIAL.filename: _pth_bytes(model)})
    path = hub.fetch_release(OFFICIAL)
    assert path == env / "models--test-org--Tiny-Depth" / "snapshots" / COMMIT / OFFICIAL.filename
    loaded = load_model(path)
    assert loaded.encoder == "mini-t" and loaded.max_depth is None and _same_weights(loaded, model)
    assert hub.fetch_release(OFFICIAL, verify="sha256") == path  # the blob's name is its SHA-256
    with pytest.raises(ValueError, match="no release named 'test-org/Tiny-Depth'; known: depth-anything/"):
        hub.fetch_release(OFFICIAL.repo_id)  # names resolve through release_for: only the official ones
    with pytest.raises(hub.WeightsNotAvailable, match="depth_anything_v2_vitl.pth of depth-anything/"):
        hub.fetch_release("Depth-Anything-V2-Large")


def test_offline_hf_release_from_cache(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _mini_model(max_depth=20.0)
    lay_out_cache(env, HF.repo_id, _hf_files(model))
    snapshot = hub.fetch_release(HF)
    assert snapshot.is_dir() and sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(snapshot)  # max_depth from config.json
    assert loaded.max_depth == 20.0 and _same_weights(loaded, model)


def test_cache_from_hf_home(tmp_path, env, monkeypatch):
    "Without HF_HUB_CACHE the cache is HF_HOME/hub, read when called (not when huggingface_hub was imported)."
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lay_out_cache(tmp_path / "home" / "hub", OFFICIAL.repo_id, {OFFICIAL.filename: _pth_bytes(_mini_model())})
    assert hub.fetch_release(OFFICIAL).is_relative_to(tmp_path / "home" / "hub")


# ------------------------------------------------------------------------------------ errors: one line, actionable


def test_not_cached_offline_names_file_url_and_place(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.WeightsNotAvailable) as info:
        hub.fetch_release(hub.RELEASES["depth-anything/Depth-Anything-V2-Small"])
    msg = str(info.value)
    assert isinstance(info.value, CheckpointError) and "\n" not in msg
    assert "https://huggingface.co/depth-anything/Depth-Anything-V2-Small/resolve/main/depth_anything_v2_vits.pth" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "--checkpoint PATH" in msg
    assert str(env / "models--depth-anything--Depth-Anything-V2-Small") in msg


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong_model"])
def test_damaged_cached_file_is_a_clear_error(env, monkeypatch, damage):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = _pth_bytes(_mini_model())
    data = {"truncated": data[: len(data) // 2], "garbage": b"<html>proxy login page</html>",
            "wrong_model": _pth_bytes(_mini_model(encoder="mini-s"))}[damage]
    lay_out_cache(env, OFFICIAL.repo_id, {OFFICIAL.filename: data})
    with pytest.raises(CheckpointError) as info:
        hub.fetch_release(OFFICIAL)
    msg = str(info.value)
    assert "\n" not in msg and OFFICIAL.filename in msg and OFFICIAL.repo_id in msg
    if damage == "wrong_model":
        assert "expected the 'mini-t' model" in msg and "'mini-s'" in msg
    else:
        assert " is damaged: " in msg and "delete the cached file" in msg and "checkpoint" in msg


def test_sha256_check_finds_damage_that_shapes_cannot(env, monkeypatch):
    "One flipped byte inside a tensor still loads; only the SHA-256 (the blob's name) tells."
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _mini_model()
    repo = lay_out_cache(env, OFFICIAL.repo_id, {OFFICIAL.filename: _pth_bytes(model)})
    blob = next((repo / "blobs").iterdir())
    data = bytearray(blob.read_bytes())
    weight = model.state_dict()["depth_head.scratch.output_conv2.2.weight"]
    at = bytes(data).find(weight.numpy().tobytes())
    assert at > 0
    data[at] ^= 0x40
    blob.write_bytes(bytes(data))
    path = hub.fetch_release(OFFICIAL)  # the cheap check on a cached file: shapes fit
    assert not _same_weights(load_model(path), model)
    with pytest.raises(CheckpointError, match=r"damaged download: its SHA-256 is [0-9a-f]{64}, the Hub's is") as info:
        hub.fetch_release(OFFICIAL, verify="sha256")
    assert "\n" not in str(info.value) and str(blob) in str(info.value)


# ----------------------------------------------------------------------------- a local Hub: download, then offline


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _send(self, status, headers, data=b"", body=True):
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(k, v)
        self.end_headers()
        if body and data:
            self.wfile.write(data)

    def _answer(self, body):
        server = self.server
        server.requests.append((self.command, self.path))
        if server.cdn_of is not None:  # the CDN: blobs by SHA-256, no Hub headers
            data = server.cdn_of.blobs.get(self.path.rsplit("/", 1)[-1])
            return self._send(200 if data is not None else 404, {"Content-Type": "application/octet-stream"},
                              data or b"", body)
        parts = self.path.split("?", 1)[0].lstrip("/").split("/")
        if server.captive:  # a proxy or captive portal: answers, but not as the Hub
            return self._send(200, {"Content-Type": "text/html"}, b"<html>log in</html>", body)
        if len(parts) < 5 or parts[2] != "resolve":
            return self._send(404, {"X-Error-Code": "RepoNotFound"}, b"", body)
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        data = server.files.get((repo_id, filename))
        if data is None or revision not in ("main", COMMIT):
            return self._send(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, b"", body)
        etag = _etag(filename, data)
        if len(etag) == 64:  # LFS: the Hub redirects to a signed CDN address on another host
            served = server.tamper(data) if server.tamper else data
            server.blobs[etag] = served
            return self._send(302, {"X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data)),
                                    "ETag": '"git-pointer-sha1"', "Location": f"{server.cdn_url}/blobs/{etag}"},
                              b"", body)
        return self._send(200, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'}, data, body)


class FakeHub:
    "huggingface.co's file-resolve protocol on 127.0.0.1, with its LFS CDN on a second port."

    def __init__(self, files: dict[tuple[str, str], bytes], captive=False, tamper=None):
        self.hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.cdn = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.hub.files, self.hub.captive, self.hub.tamper, self.hub.blobs = files, captive, tamper, {}
        self.hub.cdn_of, self.cdn.cdn_of = None, self.hub
        self.hub.requests = self.cdn.requests = self.requests = []
        self.hub.cdn_url = f"http://127.0.0.1:{self.cdn.server_address[1]}"
        self.url = f"http://127.0.0.1:{self.hub.server_address[1]}"
        self.threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in (self.hub, self.cdn)]
        for t in self.threads:
            t.start()

    def stop(self):
        for s in (self.hub, self.cdn):
            s.shutdown()
            s.server_close()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def fake_hub(env, monkeypatch):
    made = []

    def start(files, **kw):
        server = FakeHub(files, **kw)
        made.append(server)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        return server

    yield start
    for server in made:
        server.stop()


def test_download_then_offline(env, fake_hub, monkeypatch):
    model, metric = _mini_model(), _mini_model(max_depth=20.0, seed=1)
    files = {(OFFICIAL.repo_id, OFFICIAL.filename): _pth_bytes(model)}
    files |= {(HF.repo_id, name): data for name, data in _hf_files(metric).items()}
    server = fake_hub(files)
    path = hub.fetch_release(OFFICIAL)  # an empty cache: downloaded through the redirect
    snapshot = hub.fetch_release(HF)
    assert ("GET", f"/blobs/{_etag('x.pth', files[(OFFICIAL.repo_id, OFFICIAL.filename)])}") in server.requests
    assert path == env / "models--test-org--Tiny-Depth" / "snapshots" / COMMIT / OFFICIAL.filename
    assert (env / "models--test-org--Tiny-Depth" / "refs" / "main").read_text() == COMMIT
    assert _same_weights(load_model(path), model) and _same_weights(load_model(snapshot), metric)
    n = len(server.requests)
    assert hub.fetch_release(OFFICIAL) == path  # online and cached: the Hub is asked (HEAD), nothing downloaded
    assert [m for m, _ in server.requests[n:]] == ["HEAD"]
    server.stop()
    assert hub.fetch_release(OFFICIAL) == path  # the Hub gone: huggingface_hub falls back to refs/main
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.fetch_release(OFFICIAL) == path and hub.fetch_release(HF) == snapshot
    assert load_model(hub.fetch_release(HF)).max_depth == 20.0


def test_damaged_download_is_caught(env, fake_hub):
    "The CDN serves the right size with one byte changed: the SHA-256 check after the download catches it."
    data = _pth_bytes(_mini_model())
    fake_hub({(OFFICIAL.repo_id, OFFICIAL.filename): data}, tamper=lambda d: d[:-100] + bytes([d[-100] ^ 1]) + d[-99:])
    with pytest.raises(CheckpointError, match="damaged download") as info:
        hub.fetch_release(OFFICIAL)
    assert "\n" not in str(info.value)


def test_hub_without_the_file(env, fake_hub):
    fake_hub({})
    with pytest.raises(CheckpointError, match="the Hub does not serve it") as info:
        hub.fetch_release(OFFICIAL)
    assert not isinstance(info.value, hub.WeightsNotAvailable) and "\n" not in str(info.value)


def test_no_hub_answer_and_no_cache(env, fake_hub):
    "A proxy or captive portal answers instead of the Hub (no X-Repo-Commit): the error names file, URL and place."
    server = fake_hub({}, captive=True)
    with pytest.raises(hub.WeightsNotAvailable) as info:
        hub.fetch_release(OFFICIAL)
    msg = str(info.value)
    assert "\n" not in msg and f"no usable answer from {server.url}" in msg
    assert f"{server.url}/{OFFICIAL.repo_id}/resolve/main/{OFFICIAL.filename}" in msg
    assert str(env / "models--test-org--Tiny-Depth") in msg and "--checkpoint PATH" in msg


# ------------------------------------------------------------------------- timm ImageNet weights (PRV2 refiner)


def test_timm_weights_offline_for_the_refiner_encoder(env, monkeypatch):
    "`RefinerEncoder(pretrained_cfg_overlay=timm_pretrained_overlay(...))` loads the cached ImageNet weights offline."
    import timm

    from depth_anything_nb.models.prv2_refiner import ENCODERS, RefinerEncoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo_id, filename = hub.timm_weights_file("mini")
    assert (repo_id, filename) == ("timm/test_efficientnet.r160_in1k", "model.safetensors")
    assert hub.timm_weights_file("M")[0] == "timm/mobilenetv4_conv_small.e2400_r224_in1k"
    with pytest.raises(hub.WeightsNotAvailable) as info:  # nothing cached yet
        hub.fetch_timm_weights("mini")
    msg = str(info.value)
    assert "\n" not in msg and f"https://huggingface.co/{repo_id}/resolve/main/{filename}" in msg
    torch.manual_seed(3)
    imagenet = timm.create_model(ENCODERS["mini"]).state_dict()
    lay_out_cache(env, repo_id, {filename: _safetensors_bytes(imagenet)})
    overlay = hub.timm_pretrained_overlay("mini")
    assert overlay == {"file": str(env / "models--timm--test_efficientnet.r160_in1k" / "snapshots" / COMMIT / filename)}
    encoder = RefinerEncoder("mini", pretrained=True, pretrained_cfg_overlay=overlay)
    stem = encoder.backbone.conv_stem.weight
    assert torch.equal(stem, imagenet["conv_stem.weight"])
    torch.manual_seed(4)
    other = timm.create_model("test_convnext").state_dict()  # a cached file of another model: named, not loaded
    lay_out_cache(env, repo_id, {filename: _safetensors_bytes(other)}, commit="f" * 40)
    with pytest.raises(CheckpointError, match="does not fit timm's 'test_efficientnet'"):
        hub.fetch_timm_weights("mini")


def test_no_connection_and_no_cache(env, monkeypatch):
    "Connection refused (no network): the error comes at once, without the client's retries, and says what to do."
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(hub.WeightsNotAvailable) as info:
        hub.fetch_release(OFFICIAL)
    msg = str(info.value)
    assert "\n" not in msg and f"no answer from http://127.0.0.1:{port}" in msg
    assert f"http://127.0.0.1:{port}/{OFFICIAL.repo_id}/resolve/main/{OFFICIAL.filename}" in msg


def test_refiner_pretrained_true_uses_the_hub_cache(env, monkeypatch):
    "`PRV2Refiner(pretrained=True)` takes the ImageNet weights from the cache offline, or says which file is missing."
    import timm

    from depth_anything_nb.models.prv2_refiner import PRV2Refiner, RefinerConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.WeightsNotAvailable, match="model.safetensors of timm/test_efficientnet.r160_in1k"):
        PRV2Refiner(RefinerConfig.preset("mini"), pretrained=True)
    torch.manual_seed(5)
    imagenet = timm.create_model("test_efficientnet").state_dict()
    lay_out_cache(env, "timm/test_efficientnet.r160_in1k", {"model.safetensors": _safetensors_bytes(imagenet)})
    refiner = PRV2Refiner(RefinerConfig.preset("mini"), pretrained=True)
    stem = refiner.encoder.backbone.conv_stem.weight  # widened for the coarse depth: RGB part = ImageNet
    assert torch.equal(stem[:, :3], imagenet["conv_stem.weight"]) and not stem[:, 3:].any()


def test_hf_config_must_match_the_release(env, monkeypatch):
    "A transformers snapshot whose config.json says relative cannot pass for the metric release (nor vice versa)."
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = _hf_files(_mini_model(max_depth=20.0))
    files["config.json"] = json.dumps({"model_type": "depth_anything", "depth_estimation_type": "relative"}).encode()
    lay_out_cache(env, HF.repo_id, files)
    with pytest.raises(CheckpointError, match="describes a relative-depth model, the release is a metric model") as info:
        hub.fetch_release(HF)
    assert "\n" not in str(info.value)
    files["config.json"] = b"{not json"
    lay_out_cache(env, HF.repo_id, files, commit="e" * 40)
    with pytest.raises(CheckpointError, match="config.json of test-org/Tiny-Depth-Metric-hf\\): unreadable"):
        hub.fetch_release(HF)
