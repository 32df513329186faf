"""The installed environment: nothing broken on the venv's PATH.

`make venv` installs the official model code (`jkp-depth-anything-v2`, the parity oracle) with `--no-deps`; its
wheel declares console scripts (`depth_anything_run`, `depth_anything_app`, `depth_anything_run_video`) whose
modules it does not ship, so the Makefile deletes them after installing. This test finds any console script in
the interpreter's bin folder whose module cannot be found.
"""
import importlib.metadata as md
import importlib.util
import os
import sys


def _broken_scripts() -> list[str]:
    bindir = os.path.dirname(sys.executable)
    broken = []
    for dist in md.distributions():
        for entry in dist.entry_points:
            if entry.group != "console_scripts" or not os.path.exists(os.path.join(bindir, entry.name)):
                continue
            module = entry.value.split(":")[0].strip()
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                broken.append(f"{entry.name} ({dist.metadata['Name']}: no module {module!r})")
    return broken


def test_no_broken_console_script_on_the_venv_path():
    assert not _broken_scripts(), "broken console scripts (re-run `make venv`): " + ", ".join(_broken_scripts())


def test_the_makefile_removes_the_oracle_scripts(tmp_path):
    "The Makefile's REMOVE_SCRIPTS recipe, run on a fake bin folder: the scripts of the named distribution go."
    import re
    import subprocess
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    code = re.search(r"define REMOVE_SCRIPTS\n(.*?)\nendef", makefile, re.S)[1]
    dist = re.search(r"ORACLE_PIN \?= ([\w.-]+)==", makefile)[1]
    try:
        names = [e.name for e in md.distribution(dist).entry_points if e.group == "console_scripts"]
    except md.PackageNotFoundError:
        import pytest

        pytest.skip(f"{dist} is not installed")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in names + ["keep_me"]:
        (fake_bin / name).write_text("#!/bin/sh\n")
    # run the recipe with sys.executable pointing into the fake bin folder (same interpreter, same site-packages)
    wrapper = f"import sys; sys.executable = {str(fake_bin / 'python')!r}; sys.argv = ['-', {dist!r}]\n" + code
    subprocess.run([sys.executable, "-c", wrapper], check=True, capture_output=True)
    assert sorted(p.name for p in fake_bin.iterdir()) == ["keep_me"]
