"""A clean install: `pip install .` (no extras) in a new venv runs `depth-anything run` (issue 14, "Done when").

`tests/test_layers.py` blocks the optional packages inside the project's own venv, where they are still installed;
this test builds a venv from nothing, so it also proves that the base `requirements` of `settings.ini` resolve
and suffice, that the wheel carries every module the command needs, and that no extra slips in as a dependency.

Steps, each a subprocess in a fresh `python -m venv` (no `--system-site-packages`, PYTHONPATH unset):
1. torch/torchvision exactly as `make venv` installs them: `pip install $(TORCH_PIN)`, the pin read from the
   Makefile, from the same package sources (the pip configuration of the machine: its local index and PyPI).
2. `pip install <copy of the repository>` with no extras (a copy, so that the build's `build/` and `*.egg-info`
   land in a temporary folder, not in the checkout).
3. the console script `depth-anything run` on a generated image with random weights (`--random-weights`: the CLI
   builds the architecture with random weights and says so), then the same run in-process to read `sys.modules`.
4. `pip list` and `sys.modules` hold none of the extras' packages.
5. every module of every layer imports (a feature that needs an extra raises an ImportError naming it).

It takes minutes (the torch pair alone is several GB unpacked), so it prints its step times. It skips, with the
reason, when the torch pair cannot be resolved here (no local wheels and no registry). The venv is deleted at the
end (pytest keeps its last temporary folders, and this one is large)."""
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from test_layers import LAYERS, OPTIONAL, SWEEP  # the extras' import names; the layers; the every-module import sweep

ROOT = Path(__file__).resolve().parents[1]


def torch_pin() -> list[str]:
    "The Makefile's `TORCH_PIN ?= torch==X torchvision==Y`, the pair `make venv` installs."
    m = re.search(r"^TORCH_PIN\s*\?=\s*(.+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert m, "Makefile no longer defines TORCH_PIN: update tests/test_clean_install.py"
    return m.group(1).split()


def _name(req: str) -> str:
    "Distribution name of a requirement, normalised as pip lists it (`opencv-python-headless>=4.8` -> opencv-python-headless)."
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def extras_only() -> set[str]:
    "Distributions that only an extra asks for (settings.ini `*_requirements` minus the base `requirements`)."
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    d = cfg["DEFAULT"]
    base = {_name(r) for r in d["requirements"].split()}
    extra = {_name(r) for k in d if k.endswith("_requirements") for r in d[k].split()}
    return extra - base


def test_helpers_read_the_project_files():
    "The pin and the extras' names come from the files `make venv` and setup.py read (so the test follows them)."
    pin = torch_pin()
    assert [p.split("==")[0] for p in pin] == ["torch", "torchvision"] and all("==" in p for p in pin)
    names = extras_only()
    assert {"papermill", "ipywidgets", "pandas", "jupyterlab", "h5py"} <= names
    assert not names & {"torch", "numpy", "timm", "matplotlib", "opencv-python-headless"}


PROBE = """
import json, sys
from depth_anything_nb.apps.cli import main
code = main(sys.argv[1:])
import depth_anything_nb
print(json.dumps({"code": code, "file": depth_anything_nb.__file__,
                  "modules": sorted(m for m, v in sys.modules.items() if v is not None)}))
"""


def _copy_sources(dest: Path) -> Path:
    "What setup.py builds from: settings.ini, setup.py, README.md and the package (no caches, no notebooks)."
    dest.mkdir()
    for f in ["setup.py", "settings.ini", "README.md"]:
        shutil.copy2(ROOT / f, dest / f)
    shutil.copytree(ROOT / "depth_anything_nb", dest / "depth_anything_nb",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.mark.timeout(1800)
def test_pip_install_without_extras_runs_depth_anything_run():
    import cv2
    import numpy as np

    times = {}
    with tempfile.TemporaryDirectory(prefix="clean_install_") as tmp:
        tmp = Path(tmp)
        venv = tmp / "venv"
        py, bindir = venv / "bin" / "python", venv / "bin"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", PIP_NO_INPUT="1", OMP_NUM_THREADS="1",
                   PYTHONNOUSERSITE="1")

        def run(label, args, timeout):
            t0 = time.perf_counter()
            r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp)
            times[label] = round(time.perf_counter() - t0, 1)
            return r

        r = run("venv", [sys.executable, "-m", "venv", str(venv)], 300)
        if r.returncode:
            pytest.skip(f"python -m venv is not available here: {r.stderr.strip()[-300:]}")
        pin = torch_pin()
        # can the torch pair be resolved from this machine's package sources at all? (a dry run reads metadata only
        # from a local index; without one pip fetches it from the registry, and caches it for the install below)
        r = run("torch dry run", [py, "-m", "pip", "install", "--dry-run", "--no-deps", "-q", *pin], 900)
        if r.returncode:
            pytest.skip(f"the torch pair of the Makefile ({' '.join(pin)}) cannot be installed here (no local "
                        f"wheels/index and no registry?): {r.stderr.strip().splitlines()[-1:]}")
        r = run("torch pair", [py, "-m", "pip", "install", "-q", *pin], 1200)
        assert r.returncode == 0, f"pip install {' '.join(pin)}:\n{r.stderr[-3000:]}"
        src = _copy_sources(tmp / "src")
        r = run("pip install .", [py, "-m", "pip", "install", "-q", str(src)], 900)  # no extras
        assert r.returncode == 0, f"pip install . (no extras):\n{r.stderr[-3000:]}"

        r = run("pip list", [py, "-m", "pip", "list", "--format=json"], 120)
        assert r.returncode == 0, r.stderr[-2000:]
        installed = {p["name"].lower().replace("_", "-") for p in json.loads(r.stdout)}
        assert "depth-anything-nb" in installed and "torch" in installed
        leaked = sorted(installed & extras_only())
        assert not leaked, f"a base install pulled packages of the extras: {leaked}"

        image = tmp / "scene.png"
        cv2.imwrite(str(image), (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8))
        # random weights, asked for explicitly (without --checkpoint the CLI would fetch the release by name, and
        # this machine has no network)
        argv = ["run", "--img-path", str(image), "--encoder", "vits", "--random-weights", "--input-size", "28",
                "--save-npy", "--device", "cpu"]
        r = run("depth-anything run", [bindir / "depth-anything", *argv, "--outdir", str(tmp / "out")], 600)
        assert r.returncode == 0, f"depth-anything run in the clean venv:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        assert (tmp / "out" / "scene.png").exists(), sorted(p.name for p in (tmp / "out").iterdir())
        depth = np.load(next((tmp / "out").glob("scene_raw_*.npy")))
        assert depth.shape == (40, 56) and np.isfinite(depth).all()

        r = run("in-process run", [py, "-c", PROBE, *argv, "--outdir", str(tmp / "out2")], 600)
        assert r.returncode == 0, r.stderr[-3000:]
        report = json.loads(r.stdout.strip().splitlines()[-1])
        assert report["code"] == 0, r.stderr[-3000:]
        assert Path(report["file"]).is_relative_to(venv), f"imported the package from {report['file']}, not the venv"
        imported = {m.split(".")[0] for m in report["modules"]}
        assert not imported & set(OPTIONAL), sorted(imported & set(OPTIONAL))
        assert not imported & {"papermill", "ipywidgets", "pandas"}

        # every module of every layer imports on the base install, and a feature that needs an extra says which
        # (the sweep of tests/test_layers.py, here with the packages really absent rather than blocked)
        r = run("import sweep", [py, "-c", SWEEP, "[]", json.dumps(LAYERS)], 600)
        assert r.returncode == 0, r.stderr[-3000:]
        sweep = json.loads(r.stdout.strip().splitlines()[-1])
        assert not sweep["failed"], sweep["failed"]
        assert "depth_anything_nb[train]" in sweep["uses"]["h5py"], sweep["uses"]
        assert "depth_anything_nb[train]" in sweep["uses"]["canny"], sweep["uses"]
        assert "depth_anything_nb[app]" in sweep["uses"]["ipywidgets"], sweep["uses"]
        print("clean install step times (s):", json.dumps(times), "on", _cpu())


def _cpu() -> str:
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"
