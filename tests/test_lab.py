"""JupyterLab, as a new user meets it: the project's venv serves `nbs/explore.ipynb`, Run All renders the explorer.

A headless Chromium (Debian's `chromium` + `chromium-driver`, driven by selenium) opens JupyterLab on
127.0.0.1 (random free port, token), runs every cell of the explorer notebook through the menu, waits for the
app's depth image, picks another sample in its dropdown, waits for the new depth image, and asserts that the
browser console logged no errors. The notebook runs in a temporary copy, so the repository's file never gets
outputs. Skipped, with the reason, where selenium, JupyterLab or the browser is missing (`make test` installs
Chromium first when it runs as root with apt-get; see the Makefile's `browser` target).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"]
SECOND_SAMPLE = "procedural synthetic #0"


def _requirements():
    "(selenium module, chromium path, chromedriver path), or a skip naming what is missing."
    selenium = pytest.importorskip("selenium", reason="selenium not installed: pip install -e '.[lab]'")
    pytest.importorskip("jupyterlab", reason="jupyterlab not installed: pip install -e '.[lab]'")
    pytest.importorskip("jupyterlab_widgets", reason="jupyterlab_widgets not installed: pip install -e '.[lab]'")
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (make browser, as root)")
    return selenium, browser, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, deadline: float, server: subprocess.Popen, log: Path) -> None:
    while time.time() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within its time:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    "Stop the server and its kernels: SIGTERM to the server's own process group, then SIGKILL."
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)  # kernels left in the group
    except ProcessLookupError:
        pass
    server.wait(5)


@pytest.fixture
def lab(tmp_path):
    "(url of the explorer notebook, server log) for a JupyterLab serving a copy of the notebooks folder."
    _requirements()
    work = tmp_path / "project"
    (work / "nbs").mkdir(parents=True)
    shutil.copy(ROOT / "nbs" / "explore.ipynb", work / "nbs" / "explore.ipynb")
    shutil.copy(ROOT / "settings.ini", work / "settings.ini")  # the notebook's last cell runs nbdev_export here
    port, token = _free_port(), uuid.uuid4().hex
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               JUPYTER_CONFIG_DIR=str(tmp_path / "jconfig"), JUPYTER_RUNTIME_DIR=str(tmp_path / "jruntime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "jsettings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "jws"),
               OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--ServerApp.port_retries=0",
             "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly",  # no PyPI queries from a closed network
             *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI machines run as root
            stdout=out, stderr=subprocess.STDOUT, cwd=work, env=env, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", time.time() + 60, server, log)
        yield f"http://127.0.0.1:{port}/lab/tree/nbs/explore.ipynb?token={token}", log
    finally:
        _stop(server)


def _depth_image_src(driver, by) -> str | None:
    "The data URL of the explorer's depth view (the first widget image with drawn pixels), if shown."
    for output in driver.find_elements(by.CSS_SELECTOR, ".jp-OutputArea-output"):
        text = output.text
        if "Error displaying widget" in text or "Traceback" in text:  # no widget manager in the server, or a crash
            raise AssertionError(f"the notebook shows an error instead of the explorer:\n{text[:2000]}")
    for img in driver.find_elements(by.CSS_SELECTOR, ".jp-OutputArea-output .widget-image"):
        if driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img):
            return img.get_attribute("src")
    return None


@pytest.mark.timeout(300)
def test_explorer_renders_on_first_run_all(lab, tmp_path):
    selenium, browser, driver_path = _requirements()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, log = lab
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(url)
        wait = WebDriverWait(driver, 60, poll_frequency=0.5)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")
                   or "Idle" in d.find_element(By.CSS_SELECTOR, ".jp-StatusBar-Widget, #jp-main-statusbar").text)
        # Run ▸ Run All Cells, as a user does
        next(e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if e.text == "Run").click()
        wait.until(lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, ".lm-Menu-itemLabel") if e.text == "Run All Cells"])
        next(e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-itemLabel") if e.text == "Run All Cells").click()
        WebDriverWait(driver, 150, poll_frequency=1).until(lambda d: _depth_image_src(d, By))
        first = _depth_image_src(driver, By)
        # pick another sample in the app's dropdown
        sample = next(s for s in driver.find_elements(By.CSS_SELECTOR, ".widget-dropdown select")
                      if SECOND_SAMPLE in [o.text for o in s.find_elements(By.TAG_NAME, "option")])
        Select(sample).select_by_visible_text(SECOND_SAMPLE)
        WebDriverWait(driver, 60, poll_frequency=0.5).until(lambda d: (_depth_image_src(d, By) or first) != first)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, json.dumps(errors, indent=1)
    except Exception:
        shot = tmp_path / "lab.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot: {shot}\nserver log tail:\n{log.read_text()[-3000:]}")
        raise
    finally:
        driver.quit()
