"""Grid runner (`depth_anything_nb.experiments`): a grid killed mid-run resumes without redoing finished cells, and
the command line reports bad input clearly."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from depth_anything_nb.experiments import Cell, main, run_grid, table_dir

PY = sys.executable


def _sleepy_notebook(folder: Path) -> Path:
    "A stand-in stage notebook: sleeps `seconds`, then writes metrics.json with its process id."
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("seconds = 0.0\ncell_dir = '.'\nvalue = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import json, os, pathlib, time\ntime.sleep(seconds)\n"
        "pathlib.Path(cell_dir, 'metrics.json').write_text(json.dumps({'value': value, 'pid': os.getpid()}))")]
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "sleepy.ipynb")
    return folder


def _cells(seconds):
    return [Cell(f"c{i}", "sleepy", {"seconds": seconds, "value": i}, {"i": i}) for i in range(3)]


@pytest.mark.timeout(300)
def test_killed_grid_resumes_without_redoing_finished_cells(tmp_path):
    nbs = _sleepy_notebook(tmp_path / "nbs")
    runs = tmp_path / "runs"
    script = textwrap.dedent(f"""
        from depth_anything_nb.experiments import Cell, run_grid
        cells = [Cell(f"c{{i}}", "sleepy", {{"seconds": 6.0, "value": i}}, {{"i": i}}) for i in range(3)]
        run_grid("sleepy", cells, jobs=1, out_root={str(runs)!r}, nbs={str(nbs)!r})
    """)
    proc = subprocess.Popen([PY, "-c", script], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = table_dir("sleepy", "mini", str(runs))
    deadline = time.time() + 240
    while not (folder / "c0" / "result.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "the grid ended or stalled before its first cell"
        time.sleep(0.2)
    time.sleep(1.0)  # the second cell is now running
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and the cell's papermill kernel die together
    proc.wait()
    first = json.loads((folder / "c0" / "result.json").read_text())
    assert not (folder / "c1" / "result.json").exists()
    assert not (folder / "c1" / "executed.ipynb").exists()  # no half-written notebook under the final name

    df = run_grid("sleepy", _cells(6.0), jobs=2, out_root=str(runs), nbs=str(nbs))  # the same grid, resumed
    assert list(df["value"]) == [0.0, 1.0, 2.0]
    assert df["pid"].iloc[0] == first["metrics"]["pid"]  # c0 was read back, not re-run
    assert json.loads((folder / "c0" / "result.json").read_text()) == first


def test_missing_notebook_is_reported_in_its_row_and_the_grid_goes_on(tmp_path):
    nbs = _sleepy_notebook(tmp_path / "nbs")
    cells = [Cell("ok", "sleepy", {"value": 7}, {"i": 0}), Cell("gone", "no_such_stage", {}, {"i": 1})]
    df = run_grid("mixed", cells, out_root=str(tmp_path / "runs"), nbs=str(nbs))
    assert df.loc[0, "value"] == 7.0
    assert "no_such_stage.ipynb" in df.loc[1, "error"]


def test_grid_rejects_duplicate_keys_and_unknown_presets(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        run_grid("t", [Cell("a", "x"), Cell("a", "y")], out_root=str(tmp_path))
    with pytest.raises(ValueError, match="preset"):
        run_grid("t", [Cell("a", "x")], preset="huge", out_root=str(tmp_path))


def test_cli_unknown_table_exits_2_and_names_the_known_ones(capsys):
    assert main(["run", "no_such_table", "--preset", "smoke"]) == 2
    assert "no_such_table" in capsys.readouterr().err


def test_a_cell_whose_parameters_changed_runs_again(tmp_path):
    nbs = _sleepy_notebook(tmp_path / "nbs")
    first = run_grid("changing", _cells(0.0), out_root=str(tmp_path / "runs"), nbs=str(nbs))
    cells = _cells(0.0)
    cells[1] = Cell("c1", "sleepy", {"seconds": 0.0, "value": 42}, {"i": 1})
    second = run_grid("changing", cells, out_root=str(tmp_path / "runs"), nbs=str(nbs))
    assert list(second["value"]) == [0.0, 42.0, 2.0]
    assert second["pid"][0] == first["pid"][0] and second["pid"][2] == first["pid"][2]  # untouched cells reused
    assert second["pid"][1] != first["pid"][1]


TABLE_NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "nbs" / "tables").glob("*.ipynb"))


@pytest.mark.parametrize("path", TABLE_NOTEBOOKS, ids=lambda p: p.stem)
def test_each_table_notebook_tags_its_last_cell_as_the_verdict(path):
    "`experiments verdicts` reads the `verdict`-tagged cell: one per table notebook, the last code cell (the directions)."
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(cells) if "verdict" in c.metadata.get("tags", [])]
    assert tagged == [len(cells) - 1], f"{path.name}: verdict-tagged code cells {tagged}, expected only the last"


def test_cli_verdicts_reads_the_executed_table_notebook(tmp_path, capsys):
    folder = table_dir("dav2_table05", "mini", str(tmp_path))
    folder.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    verdict = nbformat.v4.new_code_cell("print('x')", metadata={"tags": ["verdict"]})
    verdict.outputs = [nbformat.v4.new_output("stream", name="stdout", text="Table 5 in miniature: NOT reproduced.\n")]
    other = nbformat.v4.new_code_cell("print('y')")
    other.outputs = [nbformat.v4.new_output("stream", name="stdout", text="not a verdict\n")]
    nb.cells = [other, verdict]
    nbformat.write(nb, folder / "dav2_table05.ipynb")
    assert main(["verdicts", "dav2_table05", "dav2_table06", "--out-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Table 5 in miniature: NOT reproduced." in out and "not a verdict" not in out
    assert "## dav2_table06 [mini]\n(not run at this preset)" in out
