"""`depth-anything run --sample-images` (make infer-demo) scores the Middlebury Motorcycle pair against its real ground truth.

Checked with oracle models that return the ground truth itself (as disparity for a relative model, in metres
for a metric one): the score must be near perfect, and invariant to the affine ambiguity of relative depth.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depth_anything_nb.apps.cli import main, score_motorcycle
from depth_anything_nb.data.procedural import middlebury_motorcycle


class Oracle(torch.nn.Module):
    "Returns a fixed map (the ground truth) resized to the network input, as a depth model's (B, H, W)."

    def __init__(self, target: np.ndarray, max_depth=None):
        super().__init__()
        self.target, self.max_depth = torch.from_numpy(target)[None, None].float(), max_depth

    def forward(self, x):
        return F.interpolate(self.target, size=x.shape[-2:], mode="bilinear", align_corners=True)[:, 0].expand(len(x), -1, -1)


@pytest.fixture(scope="module")
def moto():
    return middlebury_motorcycle()


def _filled(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    "Invalid pixels get the mean of the valid ones (so that resizing does not drag zeros into valid pixels)."
    return np.where(valid, values, values[valid].mean()).astype(np.float32)


@pytest.mark.parametrize("scale, shift", [(1.0, 0.0), (3.0, 0.7)])
def test_relative_oracle_scores_near_perfect(moto, scale, shift):
    disparity = _filled(1 / np.where(moto["valid"], moto["depth"], 1), moto["valid"])
    errors = score_motorcycle(Oracle(scale * disparity + shift), 518, torch.device("cpu"))
    assert errors["abs_rel"] < 0.03 and errors["d1"] > 0.97  # only bilinear resampling round trips differ


def test_metric_oracle_and_a_wrong_model(moto):
    depth = _filled(moto["depth"], moto["valid"])
    good = score_motorcycle(Oracle(depth, max_depth=20.0), 518, torch.device("cpu"))
    assert good["abs_rel"] < 0.03 and good["d1"] > 0.97
    bad = score_motorcycle(Oracle(2 * depth, max_depth=20.0), 518, torch.device("cpu"))  # metric: no alignment
    assert bad["abs_rel"] > 0.9 and bad["d1"] < 0.05


def test_sample_run_prints_the_score_and_says_random(tmp_path, capsys):
    code = main(["run", "--sample-images", "--encoder", "vits", "--random-weights", "--input-size", "28", "--outdir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0
    line = next(l for l in captured.out.splitlines() if l.startswith("Middlebury Motorcycle:"))
    assert "AbsRel" in line and "delta1" in line and "RANDOM WEIGHTS" in line
