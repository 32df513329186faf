"""The mechanism study (nbs/75_mechanism_study.ipynb): registered with the grid runner like the table notebooks, and
its gain / noise / verdict arithmetic on grid rows whose answer is known."""
import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from depth_anything_nb.experiments import Cell, grid_status, main, table_dir, table_notebooks
from depth_anything_nb.experiments.mechanism_study import findings, gain_map, per_seed_gains, summarise

ROOT = Path(__file__).resolve().parents[1]


def test_the_study_is_listed_and_run_like_a_table(capsys):
    known = table_notebooks()
    assert known["mechanism_study"] == ROOT / "nbs" / "75_mechanism_study.ipynb"
    assert "dav2_table05" in known  # the tables are still there
    assert main(["list"]) == 0
    assert "mechanism_study" in capsys.readouterr().out


def test_the_study_notebook_has_parameters_and_ends_with_its_verdict():
    cells = [c for c in nbformat.read(ROOT / "nbs" / "75_mechanism_study.ipynb", as_version=4).cells
             if c.cell_type == "code"]
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and all(f"{k} =" in params[0].source for k in ("preset", "jobs", "out_root", "seeds"))
    tagged = [i for i, c in enumerate(cells) if "verdict" in c.metadata.get("tags", [])]
    assert tagged == [len(cells) - 1]


def test_status_counts_the_study_cells(tmp_path):
    folder = table_dir("mechanism_study", "mini", str(tmp_path))
    for key, seconds in (("teacher-a", 60.0), ("student-a", 120.0)):
        (folder / key).mkdir(parents=True)
        (folder / key / "result.json").write_text(json.dumps({"seconds": seconds, "metrics": {}}))
    status = grid_status(["mechanism_study"], "mini", str(tmp_path)).set_index("table")
    assert status.loc["mechanism_study", "cells done"] == 2 and status.loc["mechanism_study", "cell minutes"] == 3.0


def _row(key, du=None, dl=None, teacher=None):
    row = {"cell": key}
    for model, v in (("student", du), ("synthetic-only", dl), ("model", teacher)):
        if v is not None:
            row |= {f"eval/{model}/procedural-real/abs_rel": v, f"eval/{model}/motorcycle/abs_rel": 2 * v}
    return row


def _grid(values: dict):
    "values: regime → [(D^u, D^l) per seed]; one teacher cell per seed with AbsRel 0.3."
    cells, rows = [], []
    for regime, pairs in values.items():
        for seed, (du, dl) in enumerate(pairs):
            labels = {"regime": regime, "pretraining": "mim", "gap": 0.5, "seed": seed, "teacher": f"t{seed}"}
            cells.append(Cell(f"{regime}-{seed}", "train_student", {}, labels))
            rows.append(_row(f"{regime}-{seed}", du, dl))
    rows += [_row(f"t{s}", teacher=0.3) for s in range(3)]
    return cells, pd.DataFrame(rows)


def test_gain_sigma_and_verdicts_in_closed_form():
    cells, grid = _grid({"helps": [(0.20, 0.40), (0.22, 0.40), (0.24, 0.40)],  # gains 50%, 45%, 40%
                         "hurts": [(0.50, 0.40), (0.52, 0.40), (0.54, 0.40)],  # -25%, -30%, -35%
                         "noisy": [(0.30, 0.40), (0.50, 0.40), (0.40, 0.40)]})  # +25%, -25%, 0%
    per_seed = per_seed_gains(cells, grid)
    assert np.allclose(per_seed["real/gain"], [0.5, 0.45, 0.4, -0.25, -0.3, -0.35, 0.25, -0.25, 0.0])
    assert np.allclose(per_seed["motorcycle/gain"], per_seed["real/gain"])  # both scores doubled: same ratio
    assert (per_seed["teacher/real"] == 0.3).all()
    s = summarise(per_seed).set_index("regime")
    assert math.isclose(s.loc["helps", "real/gain"], 0.45) and math.isclose(s.loc["helps", "real/σ"], 0.05)
    assert math.isclose(s.loc["helps", "real/D^u"], 0.22) and s.loc["helps", "seeds"] == 3
    assert list(s["real/verdict"]) == ["appears", "reversed", "within noise"]
    text = findings(s.reset_index(), gap_of_dl=0.5)
    assert any(t.startswith("On the shifted style, the gain from pseudo-labels appears (beyond 2σ) in 1 of 3 regimes: "
                            "helps · mim · gap 0.5: +45.0% (2σ 10.0%)") for t in text)
    assert any("is reversed" in t and "hurts" in t for t in text)
    assert any("the teacher's shifted-style AbsRel (gap 1) 0.3000 vs the synthetic-only student's 0.4000" in t
               and "the teacher is better" in t for t in text)
    assert text[-1].endswith("appears in miniature in: helps · mim · gap 0.5")
    gain_map(s.reset_index())


def test_missing_cells_are_unknown_not_zero():
    cells, grid = _grid({"one": [(0.2, 0.4)]})
    s = summarise(per_seed_gains(cells + [Cell("lost", "train_student", {}, {**cells[0].labels, "seed": 9})], grid))
    assert s.loc[0, "real/verdict"] == "unknown" and s.loc[0, "seeds"] == 1
    assert findings(pd.DataFrame()) == ["No cell of the grid ran at this preset: nothing to say."]
    assert findings(s)[-1].endswith("no regime of this grid")


def test_run_all_runs_the_tables_and_leaves_the_study_to_be_named(tmp_path, monkeypatch):
    import depth_anything_nb.experiments as ex

    nbs = tmp_path / "nbs"
    (nbs / "tables").mkdir(parents=True)
    for path in (nbs / "tables" / "t1.ipynb", nbs / "75_mechanism_study.ipynb"):
        nbformat.write(nbformat.v4.new_notebook(), path)
    ran = []

    def fake_papermill(args, env=None):
        ran.append(Path(args[3]).name)
        Path(args[4]).write_text("{}")  # the executed notebook, at the temporary path papermill writes to
        return 0

    monkeypatch.setattr(ex.subprocess, "call", fake_papermill)
    assert set(ex.table_notebooks(nbs)) == {"t1", "mechanism_study"}
    assert ex.run_tables(["all"], out_root=str(tmp_path / "runs"), nbs=nbs) == {"t1": "done"}
    assert ex.run_tables(["mechanism_study"], out_root=str(tmp_path / "runs"), nbs=nbs) == {"mechanism_study": "done"}
    assert ran == ["t1.ipynb", "75_mechanism_study.ipynb"]
