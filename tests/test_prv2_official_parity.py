"""Parity of the PRV2 refiner branch with the official modules (zhyever/PatchRefinerV2), same weights, float64.

Needs a checkout of the official repository: `PRV2_OFFICIAL_REPO=/path/to/PatchRefinerV2 pytest tests/test_prv2_official_parity.py`
(e.g. `git clone https://github.com/zhyever/PatchRefinerV2`). Only its model blocks are imported; its package
`__init__` files (mmengine, registries) are bypassed. Skipped when the variable is not set.
"""
import importlib
import os
import sys
import types
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

from depth_anything_nb.models.prv2_model import convert_official_state_dict
from depth_anything_nb.models.prv2_refiner import ENCODERS, FineToCoarse, PRV2Refiner, RefinerConfig

REPO = os.environ.get("PRV2_OFFICIAL_REPO")
pytestmark = pytest.mark.skipif(not REPO, reason="set PRV2_OFFICIAL_REPO to a checkout of zhyever/PatchRefinerV2")


@pytest.fixture(scope="module")
def official():
    "The official block modules, imported from the checkout with stub package/registry modules."
    root = Path(REPO)
    saved = {k: v for k, v in sys.modules.items() if k == "estimator" or k.startswith(("estimator.", "external"))}
    for name, folder in [("estimator", "estimator"), ("estimator.models", "estimator/models"),
                         ("estimator.models.blocks", "estimator/models/blocks"), ("external", "external"),
                         ("external.depth_anything", "external/depth_anything")]:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(root / folder)]
        sys.modules[name] = pkg
    registry = types.ModuleType("estimator.registry")
    registry.MODELS = types.SimpleNamespace(register_module=lambda *a, **k: (lambda cls: cls))
    sys.modules["estimator.registry"] = registry
    transformers = types.ModuleType("estimator.models.blocks.transformers")
    transformers.TwoWayTransformer = None
    sys.modules["estimator.models.blocks.transformers"] = transformers
    mods = types.SimpleNamespace(
        refiner=importlib.import_module("estimator.models.blocks.lightweight_refiner"),
        fusion=importlib.import_module("estimator.models.blocks.bi_directional_fusion_model"),
        unet=importlib.import_module("estimator.models.blocks.fusion_model"),
    )
    yield mods
    for k in [k for k in sys.modules if k == "estimator" or k.startswith(("estimator.", "external"))]:
        del sys.modules[k]
    sys.modules.update(saved)


def _perturb(module):
    "Move every parameter and BN statistic off its default initialisation."
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for n, b in module.named_buffers():
            if n.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif n.endswith("running_mean"):
                b.normal_(0, 0.1)


VARIANTS = [("M", "coarse-gated", False, 32), ("M", "self-agg", False, 32), ("M", "coarse-fusion", False, 32),
            ("M", None, False, 32), ("M", None, True, 32), ("M", "coarse-gated", False, 128),
            ("mini_convnext", "coarse-gated", False, 128)]


@pytest.mark.parametrize("encoder,c2f,heavy,c0", VARIANTS)
def test_refiner_branch_matches_the_official_modules(official, encoder, c2f, heavy, c0):
    torch.manual_seed(0)
    name = ENCODERS[encoder]
    chl = timm.create_model(name, features_only=True).feature_info.channels()
    convnext = "convnext" in name
    fine = official.refiner.LightWeightRefiner(name, coarse_condition=True, cls_pretrain=False,
                                               encoder_channels=[chl[0] // 2] + chl if convnext else chl)
    attr = "stem_0" if convnext else "conv_stem"  # the official 4-channel stem (RGB weights + zero depth weights)
    old = getattr(fine.refiner_encoder, attr)
    new = nn.Conv2d(4, old.out_channels, old.kernel_size, old.stride, old.padding, bias=old.bias is not None)
    with torch.no_grad():
        new.weight.copy_(torch.cat([old.weight, torch.zeros_like(old.weight[:, :1])], 1))
    setattr(fine.refiner_encoder, attr, new)
    coarse_chl = (c0, 256, 256, 256, 256, 256)
    fine_chl = [chl[0] // 2] + chl if convnext else chl
    after = [c0] + [256] * 5 if c2f else [fine_chl[0]] + fine_chl
    fusion_cls = official.fusion.BiDirectionalFusionHeavy if heavy else official.fusion.BiDirectionalFusion
    fusion = fusion_cls(coarse2fine=c2f is not None, coarse2fine_type=c2f or "coarse-gated", coarse_chl=list(coarse_chl),
                        fine_chl=list(fine_chl), fine_chl_after_coarse2fine=after)
    _perturb(fine), _perturb(fusion)
    variant = {None: "heavy_f2c" if heavy else "f2c_only", "coarse-gated": "full", "self-agg": "self_agg",
               "coarse-fusion": "coarse_fusion"}[c2f]
    widths = dict(width=256, temp_chl=(32, 64, 64, 128, 256, 512), dec_chl=(512, 256, 128, 64, 32))
    ours = PRV2Refiner(RefinerConfig.preset(encoder, variant, coarse_chl=coarse_chl, **widths))
    sd = {f"refiner_fine_branch.{k}": v for k, v in fine.state_dict().items()}
    sd |= {f"refiner_fusion_model.{k}": v for k, v in fusion.state_dict().items()}
    sd = {k.removeprefix("refiner."): v for k, v in convert_official_state_dict(sd).items()}
    ours.load_state_dict(sd, strict=True)
    fine, fusion, ours = fine.double().eval(), fusion.double().eval(), ours.double().eval()

    h, w = 64, 96
    patch = torch.rand(2, 3, h, w, dtype=torch.float64)
    depth = 5 * torch.rand(2, 1, h, w, dtype=torch.float64)
    grids = [(h, w)] + [(h // 2**i + 1 + i % 2, w // 2**i + 2) for i in range(1, 6)]  # off the refiner's grids
    coarse = [torch.randn(2, c, *g, dtype=torch.float64) for c, g in zip(coarse_chl, grids)]
    with torch.no_grad():
        feats, refiner_depth = fine(patch, depth)  # official order: low -> high resolution
        expected = fusion(c_feat=list(coarse), f_feat=feats[::-1], pred1=depth, pred2=refiner_depth, update_base=depth)
        got = ours(patch, depth, coarse)
    assert ((got - expected).abs().max() / expected.abs().max()) < 1e-10


def test_prv1_fusion_unet_matches_fine_to_coarse(official):
    torch.manual_seed(0)
    chl, temp, dec = (8, 16, 16, 16, 16, 16), (8, 16, 16, 16, 16, 16), (16, 16, 16, 16, 8)
    unet = official.unet.FusionUnet(input_chl=[2 * c for c in chl], temp_chl=list(temp), dec_chl=list(dec))
    _perturb(unet)
    ours = FineToCoarse(chl, chl, temp, dec)
    sd = convert_official_state_dict({f"refiner_fusion_model.{k}": v for k, v in unet.state_dict().items()})
    ours.load_state_dict({k.removeprefix("refiner.f2c."): v for k, v in sd.items()}, strict=True)
    unet, ours = unet.double(), ours.double()
    sizes = [(48, 64), (24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]
    c = [torch.randn(1, k, *s, dtype=torch.float64) for k, s in zip(chl, sizes)]
    f = [torch.randn(1, k, *s, dtype=torch.float64) for k, s in zip(chl, sizes)]
    p1, p2 = torch.rand(2, 1, 1, 48, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = unet(c, f, p1, p2, update_base=p1)
        got = torch.clamp(p1 + ours(c, f, p1, p2), min=0)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10)
