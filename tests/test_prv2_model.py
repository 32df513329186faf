"""PRV2 refiner branch and whole model (prv2.refiner, prv2.model): parameter counts, shapes, stem widening,
noisy pretraining, ROI alignment, the DAv2 coarse adapter and the PR-V1 baseline."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from depth_anything_nb.models.prv2_model import (
    CoarseOutput,
    DAv2Coarse,
    PatchRefiner,
    PRV1Refiner,
    roi_align_coarse,
)
from depth_anything_nb.models.prv2_refiner import (
    REFERENCE_PARAMS_M,
    VARIANTS,
    ZOEDEPTH_COARSE_CHL,
    PRV2Refiner,
    RefinerConfig,
    RefinerEncoder,
    count_params,
    widen_stem,
)
from depth_anything_nb.models.prv2_tiling import TileConfig


class FakeDAv2ForTests(nn.Module):
    """TEST DOUBLE (not a model): the `DepthAnythingV2` contract `DAv2Coarse` relies on — `max_depth`, `patch_size`,
    `depth_head.scratch.{output_conv1, layer1_rn}`, and forward(x, return_features=True) -> (depth (B,H,W), maps) with
    DAv2's map names and grid sizes. Each map is a distinct constant (its rank in the official order) plus the input's
    pooled mean, so tests can check the order and the resizing."""

    names = ("out_conv1", "path_1", "path_2", "path_3", "path_4", "layer_4_rn")  # s1 … s32 order of PRV2

    def __init__(self, features=8, max_depth=10.0):
        super().__init__()
        self.max_depth, self.patch_size, self.features = max_depth, 14, features
        self.depth_head = nn.Module()
        self.depth_head.scratch = nn.Module()
        self.depth_head.scratch.layer1_rn = nn.Conv2d(3, features, 1)
        self.depth_head.scratch.output_conv1 = nn.Conv2d(features, features // 2, 1)

    def forward(self, x, return_features=False):
        b, _, h, w = x.shape
        ph, pw = h // 14, w // 14
        grids = {"layer_4_rn": (ph // 2, pw // 2), "path_4": (ph, pw), "path_3": (2 * ph, 2 * pw),
                 "path_2": (4 * ph, 4 * pw), "path_1": (8 * ph, 8 * pw), "out_conv1": (8 * ph, 8 * pw)}
        mean = x.mean(1, keepdim=True)
        maps = {}
        for rank, name in enumerate(self.names):
            c = self.features // 2 if name == "out_conv1" else self.features
            pooled = F.adaptive_avg_pool2d(mean, grids[name])
            maps[name] = (10.0 * rank + pooled).expand(b, c, *grids[name]).contiguous()
        depth = torch.sigmoid(mean[:, 0]) * self.max_depth
        return (depth, maps) if return_features else depth


def _fake_coarse(chl, b, h, w, grid=None):
    sizes = grid or [(h, w)] + [(h * 8 // 7 // 2**i, w * 8 // 7 // 2**i) for i in range(1, 6)]
    return 10 * torch.rand(b, 1, h, w), [torch.randn(b, c, *s) for c, s in zip(chl, sizes)]


# ---------------------------------------------------------------- parameter counts (reference §1.6)
@pytest.mark.parametrize("key", list(REFERENCE_PARAMS_M), ids=lambda k: f"{k[0]}-{k[1]}")
def test_refiner_parameter_counts_match_the_official_code(key):
    encoder, variant = key
    with torch.device("meta"):
        refiner = PRV2Refiner(RefinerConfig.preset(encoder, variant, coarse_chl=ZOEDEPTH_COARSE_CHL))
    n = count_params(refiner) / 1e6
    assert abs(n - REFERENCE_PARAMS_M[key]) / REFERENCE_PARAMS_M[key] < 0.005, (key, n)


def test_reference_table_values():  # guard against editing the table to fit: the numbers
    assert REFERENCE_PARAMS_M[("M", "full")] == 46.95 and REFERENCE_PARAMS_M[("E", "full")] == 72.13
    assert REFERENCE_PARAMS_M[("C", "full")] == 246.12 and REFERENCE_PARAMS_M[("M", "self_agg")] == 34.45
    assert REFERENCE_PARAMS_M[("M", "heavy_f2c")] == 71.47 and REFERENCE_PARAMS_M[("C", "f2c_only")] == 227.30


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("encoder", ["mini", "mini_convnext"])
def test_forward_shapes_small(encoder, variant):
    refiner = PRV2Refiner(RefinerConfig.preset(encoder, variant, coarse_chl=(8, 16, 16, 16, 16, 16))).eval()
    depth, feats = _fake_coarse(refiner.cfg.coarse_chl, 2, 64, 96)
    with torch.no_grad():
        fine = refiner.encoder(torch.rand(2, 3, 64, 96), depth)
        out = refiner(torch.rand(2, 3, 64, 96), depth, feats)
    assert [tuple(f.shape[-2:]) for f in fine] == [(64, 96), (32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    assert [f.shape[1] for f in fine] == refiner.encoder.channels
    assert out.shape == (2, 1, 64, 96) and out.min() >= 0


def test_forward_shapes_m_at_448_on_meta():
    with torch.device("meta"):
        refiner = PRV2Refiner(RefinerConfig.preset("M")).eval()  # DAv2 ViT-L coarse channels
        grid = [(448, 448), (256, 256), (128, 128), (64, 64), (32, 32), (16, 16)]  # DAv2 at 448
        depth, feats = _fake_coarse(refiner.cfg.coarse_chl, 2, 448, 448, grid)
        fine = refiner.encoder(torch.rand(2, 3, 448, 448), depth)
        outs, pred2 = refiner.c2f(fine[1:], [F.interpolate(f, size=g.shape[-2:]) for f, g in zip(feats, fine)])
        out = refiner(torch.rand(2, 3, 448, 448), depth, feats)
    assert [tuple(f.shape[1:]) for f in fine] == [(32, 448, 448), (32, 224, 224), (32, 112, 112), (64, 56, 56),
                                                 (96, 28, 28), (960, 14, 14)]
    assert [tuple(f.shape[1:]) for f in outs] == [(128, 448, 448), (256, 224, 224), (256, 112, 112), (256, 56, 56),
                                                 (256, 28, 28), (256, 14, 14)]
    assert pred2.shape == (2, 1, 448, 448) and out.shape == (2, 1, 448, 448)


def test_forward_m_real_weights_small_input():
    refiner = PRV2Refiner(RefinerConfig.preset("M", coarse_chl=(8, 16, 16, 16, 16, 16), width=16)).eval()
    depth, feats = _fake_coarse(refiner.cfg.coarse_chl, 1, 64, 64)
    with torch.no_grad():
        out = refiner(torch.rand(1, 3, 64, 64), depth, feats)
    assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all() and out.min() >= 0


def test_c_has_the_transposed_conv_level_and_normalisation_stats():
    with torch.device("meta"):
        c, e = RefinerEncoder("C"), RefinerEncoder("E")
    assert c.channels == [96, 96, 192, 384, 768, 1536] and isinstance(c.to_stride2[0], nn.ConvTranspose2d)
    assert c.to_stride2[0].in_channels == 192 and c.to_stride2[0].stride == (2, 2)
    assert e.backbone.pretrained_cfg["mean"] == (0.5,) * 3 and e.backbone.pretrained_cfg["std"] == (0.5,) * 3
    mini = RefinerEncoder("mini")
    assert mini.mean.flatten().tolist() == pytest.approx(list(mini.backbone.pretrained_cfg["mean"]))
    assert mini.std.flatten().tolist() == pytest.approx(list(mini.backbone.pretrained_cfg["std"]))


# ---------------------------------------------------------------- stem widening
@pytest.mark.parametrize("name", ["M", "E", "mini_convnext"])
def test_widened_stem_reproduces_the_rgb_output_with_zero_depth_weights(name):
    torch.manual_seed(0)
    enc = RefinerEncoder(name).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = enc(x)
        enc.add_depth_input()
        after = enc(x, 7 * torch.rand(1, 1, 64, 64))  # any depth: its weights are zero
    # 3 vs 4 input channels may change the conv kernel's blocking: float32 rounding ~2·sqrt(K)·u per layer over the
    # network's depth, ≤ 3e-5 of each map's scale (elementwise atol would judge near-zero elements by the map's noise)
    assert all((a - b).abs().max() <= 3e-5 * b.abs().max() for a, b in zip(before, after))
    stem = next(m for m in enc.backbone.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == 4 and stem.weight.shape[1] == 4 and stem.weight[:, 3].abs().max() == 0
    with pytest.raises(RuntimeError):
        enc.add_depth_input()


def test_widen_stem_keeps_the_conv_class_and_the_official_bias_quirk():
    from timm.layers import Conv2dSame

    with torch.device("meta"):
        enc = RefinerEncoder("E").backbone
        new = widen_stem(enc)
    assert isinstance(new, Conv2dSame) and enc.conv_stem is new
    convnext = RefinerEncoder("mini_convnext").backbone
    bias = convnext.stem_0.bias.detach().clone()
    torch.manual_seed(1)
    assert not torch.equal(widen_stem(convnext, reinit_bias=True).bias, bias)  # official ConvNeXt side effect
    with pytest.raises(ValueError, match="no 3-channel"):
        widen_stem(nn.Sequential(nn.Conv2d(4, 8, 3)))


def test_encoder_weights_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("test_efficientnet", pretrained=False)
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    enc = RefinerEncoder("mini", weights=tmp_path / "w.safetensors")
    assert torch.equal(enc.backbone.conv_stem.weight, src.conv_stem.weight)
    with pytest.raises(FileNotFoundError):
        RefinerEncoder("mini", weights=tmp_path / "missing.pth")


# ---------------------------------------------------------------- noisy pretraining, clamp
def test_noisy_pretraining_runs_without_a_coarse_model():
    refiner = PRV2Refiner.for_noisy_pretraining(RefinerConfig.preset("mini")).eval()
    assert not refiner.encoder.depth_input
    w = refiner.f2c.residual_conv.weight
    assert abs(w.mean().item() - 1) < 0.3 and 0.7 < w.std().item() < 1.3  # N(1, 1) init
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a = refiner.forward_noisy_pretraining(image, torch.Generator().manual_seed(0))
        b = refiner.forward_noisy_pretraining(image, torch.Generator().manual_seed(0))
        c = refiner.forward_noisy_pretraining(image)
    assert a.shape == (2, 1, 64, 64) and a.min() >= 0 and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(RuntimeError):
        PRV2Refiner(RefinerConfig.preset("mini")).forward_noisy_pretraining(image)


@pytest.mark.parametrize("encoder_only", [False, True])
def test_from_noisy_pretraining(encoder_only):
    cfg = RefinerConfig.preset("mini")
    np_model = PRV2Refiner.for_noisy_pretraining(cfg)
    e2e = PRV2Refiner.from_noisy_pretraining(cfg, np_model.state_dict(), encoder_only=encoder_only)
    assert e2e.encoder.depth_input
    assert torch.equal(e2e.encoder.backbone.conv_stem.weight[:, :3], np_model.encoder.backbone.conv_stem.weight)
    same_f2c = torch.equal(e2e.f2c.residual_conv.weight, np_model.f2c.residual_conv.weight)
    assert same_f2c != encoder_only
    with pytest.raises(KeyError):
        PRV2Refiner.from_noisy_pretraining(cfg, {"nonsense.weight": torch.zeros(1)})


def test_output_is_never_negative_and_equals_the_clamped_residual_sum():
    refiner = PRV2Refiner(RefinerConfig.preset("mini", coarse_chl=(8, 16, 16, 16, 16, 16))).eval()
    with torch.no_grad():
        refiner.f2c.residual_conv.weight.mul_(500)  # residuals of both signs, far beyond the coarse depth
        depth, feats = _fake_coarse(refiner.cfg.coarse_chl, 2, 32, 48)
        patch = torch.rand(2, 3, 32, 48)
        out = refiner(patch, depth, feats)
        residual = refiner.residual(patch, depth, feats)
    assert (residual < -depth).any() and (residual > 0).any()
    assert out.min() == 0 and torch.equal(out, torch.clamp(depth + residual, min=0))


# ---------------------------------------------------------------- ROI alignment
def test_roi_align_closed_forms_and_image_index():
    x = torch.rand(2, 4, 16, 24)
    coarse = CoarseOutput(x[:, :1], [x])
    whole = roi_align_coarse(coarse, torch.tensor([[0.0, 0, 96, 64], [0, 0, 96, 64]]), (64, 96), torch.tensor([0, 1]))
    assert torch.allclose(whole.features[0], x, atol=1e-6) and torch.allclose(whole.depth, x[:, :1], atol=1e-6)
    quarter = roi_align_coarse(coarse, torch.tensor([[48.0, 32, 96, 64]]), (64, 96), torch.tensor([1]))
    up = F.interpolate(x[1:], scale_factor=2, mode="bilinear", align_corners=False)[..., 16:, 24:]
    assert torch.allclose(quarter.features[0], up, atol=1e-6)
    default = roi_align_coarse(coarse, torch.tensor([[0.0, 0, 96, 64]]), (64, 96))  # all boxes on image 0
    assert torch.allclose(default.features[0], x[:1], atol=1e-6)


# ---------------------------------------------------------------- coarse adapter
def test_dav2_adapter_contract_with_the_test_double():
    fake = FakeDAv2ForTests(features=8, max_depth=10.0)
    coarse = DAv2Coarse(fake, process_shape=(56, 84))
    assert coarse.channels == (4, 8, 8, 8, 8, 8)
    image = torch.rand(2, 3, 56, 84)
    out = coarse(image)
    x = (image - coarse.mean) / coarse.std
    assert torch.allclose(out.depth[:, 0], fake(x), atol=1e-6)
    assert [tuple(f.shape[1:]) for f in out.features] == [(4, 56, 84), (8, 32, 48), (8, 16, 24), (8, 8, 12),
                                                         (8, 4, 6), (8, 2, 3)]
    ranks = [round(f.mean().item() / 10) for f in out.features]  # the official order out_feat, path_1 … layer_4_rn
    assert ranks == [0, 1, 2, 3, 4, 5]
    assert coarse.resize(torch.rand(1, 3, 100, 100)).shape[-2:] == (56, 84)
    with pytest.raises(ValueError, match="multiple"):
        DAv2Coarse(fake, process_shape=(50, 84))
    fake.max_depth = None
    with pytest.raises(ValueError, match="metric"):
        DAv2Coarse(fake)


def test_dav2_adapter_with_the_real_model():
    dpt = pytest.importorskip("depth_anything_nb.models.dpt")
    for enc, chl in [("vits", (32, 64)), ("vitb", (64, 128)), ("vitl", (128, 256))]:
        assert DAv2Coarse.from_config(enc, device="meta").channels == (chl[0],) + (chl[1],) * 5
    torch.manual_seed(0)
    coarse = DAv2Coarse(dpt.DepthAnythingV2.from_config("mini-t", max_depth=20.0), (56, 70)).eval()
    image = torch.rand(1, 3, 56, 70)
    with torch.no_grad():
        out = coarse(image)
        depth, maps = coarse.model((image - coarse.mean) / coarse.std, return_features=True)
    assert torch.equal(out.depth[:, 0], depth) and torch.equal(out.features[5], maps["layer_4_rn"])
    assert out.features[0].shape[-2:] == (56, 70) and [f.shape[1] for f in out.features] == list(coarse.channels)
    model = PatchRefiner(coarse, PRV2Refiner(RefinerConfig.preset("mini", coarse_chl=coarse.channels))).train()
    model(image, torch.rand(1, 3, 56, 70), torch.tensor([[0.0, 0, 35, 28]])).mean().backward()  # end-to-end
    assert coarse.model.depth_head.scratch.output_conv1.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- whole model
def _tiny_model(**kw):
    torch.manual_seed(0)
    coarse = DAv2Coarse(FakeDAv2ForTests(features=8), process_shape=(28, 42))
    refiner = PRV2Refiner(RefinerConfig.preset("mini", coarse_chl=coarse.channels))
    return PatchRefiner(coarse, refiner, **kw)


def test_training_forward_and_gradients():
    model = _tiny_model()
    image_lr, patches = torch.rand(2, 3, 28, 42), torch.rand(2, 3, 28, 42)
    boxes = TileConfig((112, 168), (28, 42), (4, 4)).to_coarse(torch.tensor([[0, 0, 42, 28], [84, 56, 126, 84]])).float()
    depth = model(image_lr, patches, boxes)
    assert depth.shape == (2, 1, 28, 42) and depth.min() >= 0
    depth.mean().backward()
    stem = model.refiner.encoder.backbone.conv_stem.weight
    assert stem.grad is not None and stem.grad[:, 3].abs().sum() > 0


def test_frozen_coarse_branch():
    model = _tiny_model(train_coarse=False).train()
    assert not model.coarse.training and model.refiner.training
    assert not any(p.requires_grad for p in model.coarse.parameters())
    out = model.coarse_forward(torch.rand(1, 3, 28, 42))
    assert not out.depth.requires_grad


def test_m1_with_a_zero_residual_refiner_returns_the_upsampled_coarse_depth():
    class ZeroResidual(nn.Module):  # D_r = 0: the refined patch is roi(D_c)
        def forward(self, patch, coarse_depth, coarse_feats):
            return coarse_depth

    model = PatchRefiner(_tiny_model().coarse, ZeroResidual()).eval()
    image = torch.rand(3, 112, 168)  # = the canvas for 4x4 patches of 28x42
    out = model.infer(image, cai_mode="m1", patch_split_num=(4, 4))
    coarse_depth = model.coarse_forward(image[None]).depth
    expected = F.interpolate(coarse_depth, size=(112, 168), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(out, expected, atol=1e-4)


@pytest.mark.parametrize("mode", ["m1", "m2", "r5"])
def test_infer_shapes(mode):
    model = _tiny_model().eval()
    out = model.infer(torch.rand(3, 90, 130), cai_mode=mode, patch_split_num=(2, 2), process_num=3)
    assert out.shape == (90, 130) and out.dtype == torch.float32 and torch.isfinite(out).all() and out.min() >= 0


def test_prv1_baseline_refiner():
    coarse = DAv2Coarse(FakeDAv2ForTests(features=8), process_shape=(28, 42))
    v1 = PRV1Refiner.from_coarse(coarse)
    assert v1.fine_branch is not coarse and v1.fine_branch.channels == coarse.channels
    model = PatchRefiner(coarse, v1).eval()
    out = model.infer(torch.rand(3, 56, 84), cai_mode="m2", patch_split_num=(2, 2))
    assert out.shape == (56, 84) and out.min() >= 0
    f2c = v1.f2c
    assert [m[0].out_channels for m in f2c.merge] == [4, 8, 8, 8, 8, 8]  # temp = coarse channels
    assert [d[-2].out_channels for d in f2c.decoder] == [8, 8, 8, 8, 4]  # reversed, as the official DAv2 config
