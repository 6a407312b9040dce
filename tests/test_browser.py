"""In a real browser: `vision-lab lab` opens the explorers notebook, runs it, and its widgets drive its plotly figures.

Headless Chromium (Debian's, driven by Playwright) on loopback: open nbs/05b_explorers.ipynb in JupyterLab, clear
and run all its cells from the menus, then move the ERF explorer's depth slider and pick a layer and a head in the
attention explorer, and check that the plotly traces drawn in the page changed. Screenshots go to
results/browser/; `VISION_LAB_UPDATE_SCREENSHOTS=1` also copies the two explorer shots to docs/screenshots/ (the
README's pictures), so an ordinary run never touches tracked files. Chromium is installed with apt when missing;
a browser that cannot start fails the test with the reason.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from lab_helpers import (ROOT, jupyter_env, kill_pids, leftover_kernels, listening_addresses, processes_mentioning,
                         start_lab, stop_lab)

NOTEBOOK = ROOT / "nbs" / "05b_explorers.ipynb"
SCREENSHOTS = ROOT / "docs" / "screenshots"  # tracked: written only with VISION_LAB_UPDATE_SCREENSHOTS=1
CHROMIUM_NAMES = ("chromium", "chromium-browser")
RUN_TIMEOUT_MS = 150_000  # run-all of the quick profile on a busy 2-core machine, with margin
UPDATE_TIMEOUT_MS = 60_000  # one widget change: the kernel recomputes one figure

# JupyterLab user settings for the test's private settings dir: never autosave the tracked notebook, no news or
# update checks (no network here, and their toast would sit over the screenshots)
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}

# the plotly figure drawn inside a widget box, reduced to what a change must alter: the traces and the titles
FIGURE_STATE_JS = """box => {
    const plot = box.querySelector('.js-plotly-plot');
    if (!plot || !plot.data || !plot.layout) return null;
    const traces = plot.data.map(t => ({type: t.type, x: t.x, y: t.y, z: t.z}));
    const titles = (plot.layout.annotations || []).map(a => a.text);
    return JSON.stringify({traces, titles});
}"""


def _apt_install_chromium() -> str:
    """Install Debian's chromium with apt-get (root, or passwordless sudo); returns apt's output."""
    root = os.geteuid() == 0
    if not root and not shutil.which("sudo"):
        pytest.fail("Chromium is missing and cannot be installed: not root and no sudo (run `apt-get install chromium`)")
    prefix = [] if root else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "chromium"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run([*prefix, "apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"Chromium is missing and `{' '.join(install)}` failed ({done.returncode}):\n"
                    + (done.stdout + done.stderr)[-3000:])
    return done.stdout


def chromium_executable() -> str:
    """The system Chromium, installed with apt first when missing (one installer at a time across workers)."""
    def find() -> str | None:
        return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)

    if (found := find()) is None:
        with open("/tmp/vision_lab_chromium_install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two pytest workers must not run apt at once
            if (found := find()) is None:
                _apt_install_chromium()
                found = find()
    if found is None:
        pytest.fail(f"apt installed chromium but none of {CHROMIUM_NAMES} is on PATH")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60)
    if version.returncode != 0:
        pytest.fail(f"{found} --version failed ({version.returncode}): {version.stdout}{version.stderr}")
    return found


def _write_lab_config(env: dict[str, str], tmp_path: Path) -> None:
    """The private JupyterLab settings, and checkpoints under `tmp_path` (opening a notebook writes one)."""
    for name, values in LAB_SETTINGS.items():
        path = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    server_config = Path(env["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.json"
    server_config.parent.mkdir(parents=True, exist_ok=True)
    # an absolute checkpoint_dir: no .ipynb_checkpoints/ left in nbs/
    server_config.write_text(json.dumps({"FileCheckpoints": {"checkpoint_dir": str(tmp_path / "checkpoints")}}))


def _wait_for_kernel(lab, notebook: str, timeout: float = 90) -> dict:
    """Wait until the server has a session for `notebook` whose kernel is idle with the page connected to it."""
    deadline, kernel = time.time() + timeout, None
    while time.time() < deadline:
        request = urllib.request.Request(f"{lab.base}/api/sessions", headers={"Authorization": f"token {lab.token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            sessions = json.load(answer)
        kernel = next((s["kernel"] for s in sessions if s["path"] == notebook and s.get("kernel")), None)
        if kernel and kernel.get("connections", 0) >= 1 and kernel.get("execution_state") == "idle":
            return kernel
        time.sleep(0.5)
    raise AssertionError(f"no idle kernel connected to {notebook} within {timeout:.0f} s: {kernel}\n{lab.log()}")


def _click_menu(page, menu: str, item: str) -> None:
    """Click `menu` in JupyterLab's menu bar, then its entry `item` (as a person would)."""
    exactly = lambda text: re.compile(rf"^\s*{re.escape(text)}\s*$")  # "Run All Cells", not "Restart … Run All Cells…"
    page.locator(".lm-MenuBar-itemLabel", has_text=exactly(menu)).click()
    page.locator(".lm-Menu-itemLabel", has_text=exactly(item)).click()


def _wait_for_run_all(page, explorer_boxes: int = 2) -> None:
    """Wait until both explorer widgets show their plotly figure, or fail at the first error output."""
    done_or_failed = """n => {
        const errors = [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
            .filter(e => /Traceback/.test(e.textContent));
        if (errors.length) return true;
        return document.querySelectorAll('.jp-OutputArea-output .widget-vbox .js-plotly-plot').length >= n;
    }"""
    page.wait_for_function(done_or_failed, arg=explorer_boxes, timeout=RUN_TIMEOUT_MS, polling=500)
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    texts = [t for t in errors.all_text_contents() if "Traceback" in t]
    assert not texts, "a cell failed in the browser:\n" + "\n".join(texts)[-3000:]


def _explorer_box(page, label: str):
    """The widget box (controls + figure) of the explorer that has a control called `label`."""
    box = page.locator(".jp-OutputArea-output .widget-vbox").filter(
        has=page.locator(".widget-label", has_text=label)).filter(has=page.locator(".js-plotly-plot"))
    assert box.count() == 1, f"expected one explorer with a {label!r} control, found {box.count()}"
    return box.first


def _figure_state(box) -> str:
    state = box.evaluate(FIGURE_STATE_JS)
    assert state, "the explorer's figure is not a rendered plotly plot"
    return state


def _control(box, kind: str, label: str):
    """The control of kind `kind` (CSS class, e.g. widget-slider) labelled `label` in an explorer box."""
    return box.locator(f".{kind}").filter(has=box.page.locator(".widget-label", has_text=label))


def _slide(box, label: str, steps: int) -> None:
    """Move the slider `label` by `steps` with the arrow keys on its handle, as a keyboard user does."""
    handle = _control(box, "widget-slider", label).locator(".noUi-handle")
    handle.focus()
    for _ in range(abs(steps)):
        handle.press("ArrowRight" if steps > 0 else "ArrowLeft")
    handle.blur()  # no focus ring in the screenshots


def _choose(box, label: str, option: str) -> None:
    """Pick `option` in the dropdown `label`."""
    _control(box, "widget-dropdown", label).locator("select").select_option(label=option)


def _wait_for_figure(box, before: str, expect: str) -> str:
    """Wait until the box's rendered plotly figure differs from `before` and mentions `expect`; returns its state."""
    box.page.wait_for_function(
        f"([box, before, expect]) => {{ const s = ({FIGURE_STATE_JS})(box); "
        "return s !== null && s !== before && s.includes(expect); }",
        arg=[box.element_handle(), before, expect], timeout=UPDATE_TIMEOUT_MS, polling=250)
    return _figure_state(box)


# the part of an explorer worth a picture: its controls and its plot (the box itself stretches to the page width)
CONTENT_RECT_JS = """([box, pad]) => {
    const parts = [...box.querySelector('.widget-hbox').children, box.querySelector('.js-plotly-plot .main-svg')];
    const rects = parts.filter(Boolean).map(e => e.getBoundingClientRect()).filter(r => r.width && r.height);
    const own = box.getBoundingClientRect();  // the margin stays inside the box: no prompt or cell border
    const left = Math.max(own.left, Math.min(...rects.map(r => r.left)) - pad);
    const top = Math.max(own.top, Math.min(...rects.map(r => r.top)) - pad);
    const right = Math.min(own.right, Math.max(...rects.map(r => r.right)) + pad);
    const bottom = Math.min(own.bottom, Math.max(...rects.map(r => r.bottom)) + pad);
    return {x: left, y: top, width: right - left, height: bottom - top};
}"""


def _shoot(box, name: str, shots: Path, pad: int = 12) -> Path:
    """Screenshot an explorer's controls and figure, with a margin, into `shots`/`name`."""
    box.scroll_into_view_if_needed()
    clip = box.page.evaluate(CONTENT_RECT_JS, [box.element_handle(), pad])
    path = shots / name
    box.page.screenshot(path=str(path), clip=clip, animations="disabled")
    from PIL import Image, ImageOps
    with Image.open(path) as shot:  # the controls sit on the box's top edge: a white frame reads better
        ImageOps.expand(shot.convert("RGB"), border=pad, fill="white").save(path, optimize=True)
    assert path.stat().st_size > 10_000, f"{path} is suspiciously small ({path.stat().st_size} bytes)"
    return path


def test_explorers_render_and_respond_in_jupyterlab(tmp_path):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    from vision_lab.settings import results_path

    chromium = chromium_executable()
    shots = results_path("browser")
    notebook_before = NOTEBOOK.read_bytes()
    env = jupyter_env(tmp_path, VISION_LAB_PROFILE="quick")  # papermill parameters do not exist in a browser
    _write_lab_config(env, tmp_path)
    profile_dir = tmp_path / "chromium-profile"
    started = time.perf_counter()
    lab = start_lab(tmp_path, env=env)
    try:
        with sync_playwright() as playwright:
            try:
                context = playwright.chromium.launch_persistent_context(
                    str(profile_dir), executable_path=chromium, headless=True,
                    viewport={"width": 1400, "height": 1000}, device_scale_factor=1,
                    args=["--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            except PlaywrightError as error:
                pytest.fail(f"Chromium ({chromium}) did not start under Playwright: {error}")
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.set_default_timeout(60_000)
                page.goto(f"{lab.base}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
                notebook = page.locator(".jp-NotebookPanel .jp-Notebook")
                notebook.wait_for(state="visible", timeout=90_000)
                _wait_for_kernel(lab, NOTEBOOK.name)  # Run All before the page holds its kernel asks for one
                _click_menu(page, "Edit", "Clear Outputs of All Cells")  # only this run's outputs count
                _click_menu(page, "Run", "Run All Cells")
                _wait_for_run_all(page)
                ran = time.perf_counter()
                page.screenshot(path=str(shots / "lab_after_run_all.png"))

                # ERF explorer: sliders, moved with the arrow keys on their handles
                erf = _explorer_box(page, "depth")
                erf.scroll_into_view_if_needed()
                depth_readout = _control(erf, "widget-slider", "depth").locator(".widget-readout")
                depth = int(depth_readout.text_content())
                before = _figure_state(erf)
                _slide(erf, "depth", +1)
                after = _wait_for_figure(erf, before, f"depth {depth + 1}")
                assert int(depth_readout.text_content()) == depth + 1 and f"depth {depth + 1}" not in before
                _slide(erf, "size", +2)  # step 2: odd kernel sizes only
                _wait_for_figure(erf, after, "size 7")
                erf_shot = _shoot(erf, "erf_explorer.png", shots)

                # attention explorer: the notebook leaves it on the rollout (heads averaged, head dropdown
                # disabled); pick the last layer, then one head, then back to the rollout and move the query
                attention = _explorer_box(page, "head")
                attention.scroll_into_view_if_needed()
                head_select = _control(attention, "widget-dropdown", "head").locator("select")
                before = _figure_state(attention)
                assert "rollout" in before and head_select.is_disabled()
                layers = _control(attention, "widget-dropdown", "layer").locator("option").all_text_contents()
                last = [name for name in layers if name != "rollout"][-1]
                _choose(attention, "layer", last)
                after = _wait_for_figure(attention, before, f"{last}, head mean")
                assert "rollout" not in after and head_select.is_enabled()
                _choose(attention, "head", "1")
                after = _wait_for_figure(attention, after, f"{last}, head 1")
                _choose(attention, "layer", "rollout")
                after = _wait_for_figure(attention, after, "rollout, head mean")
                query = re.search(r"query \((\d+), (\d+)\)", after).groups()
                _slide(attention, "row", +2)
                after = _wait_for_figure(attention, after, f"query ({int(query[0]) + 2}, {query[1]})")
                attention_shot = _shoot(attention, "attention_explorer.png", shots)
                interacted = time.perf_counter()
            except BaseException:
                try:
                    page.screenshot(path=str(shots / "lab_failure.png"))
                except Exception:  # noqa: BLE001 — the screenshot is a courtesy; keep the real failure
                    pass
                raise
            finally:
                context.close()
    finally:
        stop_lab(lab)
        left = {**leftover_kernels(lab), **processes_mentioning(str(profile_dir))}
        kill_pids(left)
    assert not left, f"processes outlived the test: {left}"
    assert not listening_addresses(lab.port), "JupyterLab still listens after the test"
    assert NOTEBOOK.read_bytes() == notebook_before, "the browser session modified the tracked notebook"
    assert not (NOTEBOOK.parent / ".ipynb_checkpoints").exists(), "the browser session left checkpoints in nbs/"
    if os.environ.get("VISION_LAB_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for shot in (erf_shot, attention_shot):
            shutil.copyfile(shot, SCREENSHOTS / shot.name)
    print(f"lab up + run all: {ran - started:.1f} s, interactions: {interacted - ran:.1f} s")
