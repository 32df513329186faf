"""Repository hygiene that CI enforces: the package is what the notebooks export, notebooks are clean."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBDEV_EXPORT = Path(sys.executable).with_name("nbdev_export")


def _py_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


@pytest.mark.skipif(not NBDEV_EXPORT.exists(), reason="nbdev not installed")
def test_package_matches_notebook_export(tmp_path):
    "Exporting nbs/ into a scratch copy must reproduce depth_anything_nb/ exactly (run `make export` if not)."
    shutil.copy(ROOT / "settings.ini", tmp_path / "settings.ini")
    shutil.copytree(ROOT / "nbs", tmp_path / "nbs")
    shutil.copytree(ROOT / "depth_anything_nb", tmp_path / "depth_anything_nb")
    subprocess.run([str(NBDEV_EXPORT)], cwd=tmp_path / "nbs", check=True, capture_output=True)
    exported, committed = _py_files(tmp_path / "depth_anything_nb"), _py_files(ROOT / "depth_anything_nb")
    stale = sorted(k for k in exported if exported[k] != committed.get(k))
    assert not stale, f"depth_anything_nb/ is out of sync with nbs/ for {stale}: run `make export` and commit"


def _notebooks():
    return sorted((ROOT / "nbs").rglob("*.ipynb"))


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_is_clean(path):
    "Committed notebooks carry no outputs or execution counts (run `make clean-nbs`)."
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; run `make clean-nbs`"


def test_papermill_parameter_tags_survive_cleaning():
    "settings.ini must let nbdev_clean keep papermill's `parameters` tag."
    assert "allowed_cell_metadata_keys = tags" in (ROOT / "settings.ini").read_text()


def _parameter_cell(path):
    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    return "".join(cells[0]["source"]) if cells else None


@pytest.mark.parametrize("path", [p for p in _notebooks() if _parameter_cell(p) is not None],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_papermill_reads_every_parameter(path):
    """`papermill --help-notebook` and papermill's unknown-parameter check see every parameter of the cell.

    papermill gives up on a line holding more than one `=` (a comment like `# lr = base × 10` is enough) and
    logs "Unable to parse line"; such a parameter then vanishes from `--help-notebook`."""
    import ast

    import papermill

    source = _parameter_cell(path)
    assigned = {t.id for node in ast.parse(source).body if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
    seen = set(papermill.inspect_notebook(str(path)))
    assert seen == assigned, f"{path.name}: papermill cannot read {sorted(assigned - seen)} (one `=` per line, comments included)"
