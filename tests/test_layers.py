"""The package's layers: a module imports only from its own layer or the layers below it.

    core < models < data < train < pipelines < apps < experiments

`core/` holds file utilities every layer uses (atomic writes); `models/` the architectures, checkpoints and
inference; `data/` datasets, transforms and the pseudo-label store; `train/` losses, metrics, the trainer,
distributed helpers and the evaluation suite; `pipelines/` the stage functions of both papers; `apps/` the
command line and the explorer; `experiments/` the grid runner and the paper tables. The top-level entry module
`depth_anything_nb.stages` (the documented `torchrun ... -m depth_anything_nb.stages`) belongs to `pipelines`.

Imports are read with `ast` from every module of the package, function-level imports included, relative
imports resolved. A second test follows what `depth-anything run` imports (statically, and in a subprocess
with the optional packages made unimportable): inference must not reach `train/`, `pipelines/` or `experiments/`.
"""
import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "depth_anything_nb"
LAYERS = ["core", "models", "data", "train", "pipelines", "apps", "experiments"]
TOP_LEVEL = {"depth_anything_nb": "core", "depth_anything_nb.stages": "pipelines"}  # __init__ loads names lazily
# Edges from the inference path into a layer it must not need, each with its reason. PatchRefiner stage models load
# through the model registry (models.registry.load_model / load_patchrefiner), so no edge into pipelines/ is allowed.
INFERENCE_ALLOWLIST = {
    ("depth_anything_nb.apps.cli", "depth_anything_nb.train.metrics"):
        "`depth-anything run --sample-images` (make infer-demo) scores the Middlebury Motorcycle pair with the "
        "evaluation metrics (function-level imports in score_motorcycle / motorcycle_protocol; a plain run never loads them)",
}
FORBIDDEN_FOR_INFERENCE = ("train", "pipelines", "experiments")
# not optional: matplotlib gives `run` the official Spectral_r colouring (models/inference.colormap_lut), so it is an
# inference requirement in settings.ini. Everything below belongs to an extra (train, app, experiments, dev).
OPTIONAL = ["papermill", "ipywidgets", "ipykernel", "IPython", "pandas", "tabulate", "h5py", "OpenEXR", "Imath",
            "skimage", "scipy", "nbformat", "nbdev", "jupyterlab"]


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(PKG.rglob("*.py")):
        if "__pycache__" in p.parts or p.name == "_modidx.py":
            continue
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _imports(name: str, path: Path) -> set[str]:
    "Every depth_anything_nb module `name` imports (module level and inside functions), relative ones resolved."
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for a in node.names:  # `from depth_anything_nb.models import dpt` imports the module models.dpt
                found.add(f"{target}.{a.name}")
    mods = _modules()
    return {m for m in found if m in mods and m != name}


def layer_of(module: str) -> str:
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    layer = module.split(".")[1]
    assert layer in LAYERS, f"{module}: not in a layer folder ({', '.join(LAYERS)}); place it in one"
    return layer


def test_every_module_sits_in_a_layer():
    assert {m.split(".")[1] for m in _modules() if m not in TOP_LEVEL} == set(LAYERS)
    for m in _modules():
        layer_of(m)


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for name, path in _modules().items():
        own = LAYERS.index(layer_of(name))
        upward += [f"{name} ({layer_of(name)}) imports {dep} ({layer_of(dep)})" for dep in sorted(_imports(name, path))
                   if LAYERS.index(layer_of(dep)) > own]
    assert not upward, "imports from a layer above:\n" + "\n".join(upward)


def test_layer_check_sees_function_level_and_relative_imports(tmp_path):
    "The checker itself: a function-level relative import upward is found (so the test above can fail)."
    fake = tmp_path / "depth_anything_nb" / "models" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from ..pipelines.stages import main\n    from depth_anything_nb.apps import cli\n")
    deps = _imports("depth_anything_nb.models.x", fake)
    assert {"depth_anything_nb.pipelines.stages", "depth_anything_nb.apps.cli"} <= deps


def _inference_closure() -> tuple[set[str], set[tuple[str, str]]]:
    "Modules `depth-anything run` can import (apps.cli, its SUBCOMMAND_MODULES, transitively), allowlisted edges."
    mods = _modules()
    cli = "depth_anything_nb.apps.cli"
    tree = ast.parse(mods[cli].read_text(encoding="utf-8"))
    sub = [ast.literal_eval(n.value) for n in ast.walk(tree) if isinstance(n, ast.AnnAssign | ast.Assign)
           and any(getattr(t, "id", None) == "SUBCOMMAND_MODULES" for t in (getattr(n, "targets", None) or [n.target]))]
    assert sub, "apps/cli.py no longer lists SUBCOMMAND_MODULES: update this test"
    todo, seen, used = [cli, *sub[0]], set(), set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for dep in _imports(m, mods[m]):
            if (m, dep) in INFERENCE_ALLOWLIST:
                used.add((m, dep))
                continue
            todo.append(dep)
    return seen, used


def test_inference_does_not_reach_training_pipelines_or_experiments():
    seen, used = _inference_closure()
    bad = sorted(m for m in seen if layer_of(m) in FORBIDDEN_FOR_INFERENCE)
    assert not bad, f"the inference path imports {bad}"
    assert not [edge for edge in INFERENCE_ALLOWLIST if layer_of(edge[1]) == "pipelines"], \
        "no inference edge into pipelines/ may be allowlisted: models load through models.registry"
    assert {"depth_anything_nb.apps.prv2_cli", "depth_anything_nb.models.registry"} <= seen  # refine loads via the registry
    stale = set(INFERENCE_ALLOWLIST) - used
    assert not stale, f"allowlisted imports no longer made (remove them from INFERENCE_ALLOWLIST): {sorted(stale)}"


BLOCKER = textwrap.dedent("""
    import json, sys
    for name in json.loads(sys.argv[1]):  # as if not installed: `import` raises ModuleNotFoundError, find_spec is None
        sys.modules[name] = None
    import torch
    from depth_anything_nb.models.checkpoints import save_safetensors
    from depth_anything_nb.models.dpt import DepthAnythingV2
    torch.manual_seed(0)
    save_safetensors(DepthAnythingV2.from_config("vits"), sys.argv[3] + "/tiny.safetensors")
    from depth_anything_nb.apps.cli import main
    code = main(["run", "--img-path", sys.argv[2], "--outdir", sys.argv[3] + "/out", "--encoder", "vits",
                 "--checkpoint", sys.argv[3] + "/tiny.safetensors", "--input-size", "28", "--save-npy"])
    print(json.dumps({"code": code, "modules": sorted(m for m, v in sys.modules.items() if v is not None)}))
""")


def test_depth_anything_run_without_optional_packages(tmp_path):
    """`depth-anything run` on an image with a random checkpoint, every optional package made unimportable
    (`sys.modules[name] = None`, which is what an absent package looks like to `import` and `find_spec`).

    What this proves: the inference path needs none of them (nothing imports them, even lazily, on this path)
    and imports no train/pipelines/experiments module. It does not prove that `pip install .` without extras
    resolves (the venv still has them installed; the blocker only makes importing them fail)."""
    import cv2
    import numpy as np

    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", BLOCKER, json.dumps(OPTIONAL), str(image), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "scene_raw_depth_meter.npy").exists() or any((tmp_path / "out").glob("scene*.npy"))
    imported = {m.split(".")[0] for m in report["modules"]}
    assert not imported & set(OPTIONAL)
    ours = [m for m in report["modules"] if m.startswith("depth_anything_nb.")]
    assert not [m for m in ours if m.split(".")[1] in FORBIDDEN_FOR_INFERENCE], ours


def test_blocker_blocks(tmp_path):
    "The blocker itself: an import of a blocked package fails inside the subprocess (so the test above can fail)."
    code = BLOCKER.split("import torch")[0] + "import tabulate\n"
    result = subprocess.run([sys.executable, "-c", code, json.dumps(OPTIONAL), "x", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr and "tabulate" in result.stderr


SWEEP = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    for name in json.loads(sys.argv[1]):
        sys.modules[name] = None
    import torch
    failed = {}
    for layer in json.loads(sys.argv[2]):
        pkg = importlib.import_module(f"depth_anything_nb.{layer}")
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name == "__main__":
                continue
            try:
                importlib.import_module(f"depth_anything_nb.{layer}.{info.name}")
            except Exception as e:
                failed[f"{layer}.{info.name}"] = repr(e)
    uses = {}
    from depth_anything_nb.train.metrics import canny_edges
    from depth_anything_nb.data import formats
    from depth_anything_nb.apps.explorer import ExplorerUI
    for key, use in [("canny", lambda: canny_edges(torch.zeros(8, 8))), ("h5py", lambda: formats.h5py.File("x.h5")),
                     ("ipywidgets", lambda: ExplorerUI(sample=None))]:
        try:
            use()
            uses[key] = "no error"
        except ImportError as e:
            uses[key] = str(e)
    print(json.dumps({"failed": failed, "uses": uses}))
""")


def test_every_module_imports_without_optional_packages_and_names_the_extra_on_use():
    """With every optional package unimportable, each module of each layer still imports; using a feature that
    needs one raises an ImportError naming the extra (`core.extras.optional`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", SWEEP, json.dumps(OPTIONAL), json.dumps(LAYERS)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not report["failed"], report["failed"]
    assert "depth_anything_nb[train]" in report["uses"]["canny"], report["uses"]
    assert "depth_anything_nb[train]" in report["uses"]["h5py"], report["uses"]
    assert "depth_anything_nb[app]" in report["uses"]["ipywidgets"], report["uses"]


@pytest.mark.parametrize("argv, expect", [
    (["-m", "depth_anything_nb.stages", "no-such-stage"], "train_student"),  # README: torchrun ... -m depth_anything_nb.stages
    (["-m", "depth_anything_nb.experiments", "list"], "dav2_table05"),  # README: python -m depth_anything_nb.experiments
])
def test_documented_module_commands_still_run(argv, expect):
    "The entry modules the README documents survive the move of their code into pipelines/ and experiments/."
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert expect in result.stdout + result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
