"""Package checks: generated code in sync, settings errors, op input validation, the CLI, the wheel."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*command, env=None, cwd=ROOT, timeout=300):
    return subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


# --- generated code and clean notebooks -------------------------------------------------------

def test_generated_code_matches_notebooks():
    result = _run(sys.executable, "tools/export_notebooks.py", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def checkout_copy(tmp_path):
    """A throw-away copy of the parts of the checkout the export tool reads and writes."""
    for name in ("nbs", "vision_lab", "kernels", "tools"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "settings.ini"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_check_catches_edited_generated_code(checkout_copy):
    module = checkout_copy / "vision_lab" / "settings.py"
    module.write_text(module.read_text() + "\n# edited by hand\n")
    (checkout_copy / "kernels" / "stale_kernel.py").write_text("x = 1\n")
    result = _run(sys.executable, "tools/export_notebooks.py", "--check", cwd=checkout_copy)
    assert result.returncode == 1
    assert "vision_lab/settings.py: differs" in result.stdout and "kernels/stale_kernel.py" in result.stdout


def test_check_catches_unclean_notebook(checkout_copy):
    path = checkout_copy / "nbs" / "00_settings.ipynb"
    nb = json.loads(path.read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["execution_count"] = 3
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
    path.write_text(json.dumps(nb))
    result = _run(sys.executable, "tools/export_notebooks.py", "--check", cwd=checkout_copy)
    assert result.returncode == 1 and "00_settings.ipynb: not clean" in result.stdout
    fixed = _run(sys.executable, "tools/export_notebooks.py", cwd=checkout_copy)  # make export repairs it
    assert fixed.returncode == 0, fixed.stderr
    assert _run(sys.executable, "tools/export_notebooks.py", "--check", cwd=checkout_copy).returncode == 0


# --- settings ------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [("DEVICE", "gpu"), ("KERNEL_BACKEND", "cuda"), ("PROFILE", "medium"),
                                       ("SEED", "-1")])
def test_bad_setting_is_one_line_naming_the_key(key, value):
    commands = [["info"], ["list"], ["lab", "--dry-run"], ["run", "settings"]] if key == "DEVICE" else [["info"]]
    for command in commands:
        result = _run(str(BIN / "vision-lab"), *command, env={f"VISION_LAB_{key}": value})
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert key.lower() in result.stderr and value in result.stderr


def test_bad_settings_file_names_key_and_allowed_values(tmp_path):
    ini = tmp_path / "settings.ini"
    ini.write_text("[vision_lab]\nkernel_backend = fastest\n")
    result = _run(str(BIN / "vision-lab"), "info", env={"VISION_LAB_SETTINGS": str(ini)})
    assert result.returncode == 2
    assert "kernel_backend='fastest'" in result.stderr and "interpret" in result.stderr and str(ini) in result.stderr


def test_settings_precedence(tmp_path, monkeypatch):
    from vision_lab.settings import load_settings
    ini = tmp_path / "settings.ini"
    ini.write_text("[vision_lab]\nprofile = full\nseed = 4\nresults_dir = out\n")
    monkeypatch.setenv("VISION_LAB_SEED", "9")
    settings = load_settings(ini, profile="quick")
    assert (settings.profile, settings.seed, settings.results_dir) == ("quick", 9, tmp_path.resolve() / "out")


# --- ops: input validation and the interpreter guard --------------------------------------------

def _value_error(fn) -> str:
    with pytest.raises(ValueError) as info:
        fn()
    return str(info.value)


def test_layer_norm_2d_rejects_bad_input_naming_the_argument():
    from vision_lab.ops import layer_norm_2d
    x, w, b = torch.randn(2, 6, 5, 5), torch.ones(6), torch.zeros(6)
    assert _value_error(lambda: layer_norm_2d(x[0], w, b)).startswith("x must have 4 dimensions")
    assert _value_error(lambda: layer_norm_2d(x, w[:4], b)).startswith("weight must have shape (6,)")
    assert _value_error(lambda: layer_norm_2d(x, w, b.int())).startswith("bias has dtype int32")
    assert _value_error(lambda: layer_norm_2d(x, w, b, eps=-1)).startswith("eps=-1")
    assert _value_error(lambda: layer_norm_2d(x.long(), w, b)).startswith("x has dtype int64")
    assert _value_error(lambda: layer_norm_2d(x, w, b, backend="triton")).startswith("kernel_backend='triton'")
    assert _value_error(lambda: layer_norm_2d(torch.randn(2, 0, 3, 3))).startswith("x is empty")


INTERPRETER_SCRIPT = """
import torch, vision_lab.ops as ops
x = torch.randn(2, 5, 4, 3, requires_grad=True)
try:
    ops.layer_norm_2d(x.transpose(2, 3))
except ValueError as error:
    print("strides:", error)
y = ops.layer_norm_2d(x, torch.ones(5), torch.zeros(5))
ref = ops.layer_norm_2d_reference(x, torch.ones(5), torch.zeros(5))
print("interpreted:", __import__("vision_lab.kernels").kernels.INTERPRETED, "max error:", float((y - ref).abs().max()))
"""


def test_interpret_backend_runs_triton_interpreter():
    result = _run(sys.executable, "-c", INTERPRETER_SCRIPT, env={"VISION_LAB_KERNEL_BACKEND": "interpret"})
    assert result.returncode == 0, result.stderr
    assert "strides: x must be dense" in result.stdout and "interpreted: True" in result.stdout
    assert float(result.stdout.rsplit("max error:", 1)[1]) < 1e-5


def test_interpret_after_compiled_import_is_refused():
    script = ("import torch, vision_lab.ops as ops\nops.list_ops()\n"
              "ops.layer_norm_2d(torch.randn(1, 3, 2, 2), backend='interpret')")
    result = _run(sys.executable, "-c", script, env={"VISION_LAB_KERNEL_BACKEND": "auto"})
    assert result.returncode != 0 and "imported without the interpreter" in result.stderr


# --- CLI ----------------------------------------------------------------------------------------

def test_cli_list_info_run(tmp_path):
    listing = _run(str(BIN / "vision-lab"), "list")
    assert listing.returncode == 0 and "Techniques (" in listing.stdout and "Mixers (" in listing.stdout
    info = _run(str(BIN / "vision-lab"), "info", env={"VISION_LAB_KERNEL_BACKEND": "interpret"})
    assert info.returncode == 0 and "triton interpreter                 on" in info.stdout
    unknown = _run(str(BIN / "vision-lab"), "run", "no_such_notebook")
    assert unknown.returncode == 2 and "unknown notebook 'no_such_notebook'" in unknown.stderr
    bad_param = _run(str(BIN / "vision-lab"), "run", "settings", "-p", "size", "3")
    assert bad_param.returncode == 2 and "has no parameter size" in bad_param.stderr
    output = tmp_path / "settings_run.ipynb"
    ran = _run(str(BIN / "vision-lab"), "run", "00_settings", "-p", "profile", "quick", "-o", str(output))
    assert ran.returncode == 0, ran.stderr
    assert '"profile = \\"quick\\""' in output.read_text() or "profile = \\\"quick\\\"" in output.read_text()


def test_cli_lab_is_loopback_with_token():
    result = _run(str(BIN / "vision-lab"), "lab", "--dry-run", "--no-browser", "--port", "8891")
    assert result.returncode == 0
    command = result.stdout
    assert "--ServerApp.ip=127.0.0.1" in command and "--IdentityProvider.token=<token>" in command
    assert "allow_origin" not in command and "--port 8891" in command
    refused = _run(str(BIN / "vision-lab"), "lab", "--dry-run", "--ServerApp.allow_origin=*")
    assert refused.returncode == 2 and "refused" in refused.stderr


# --- the wheel ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_wheel_installs_in_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT))
    assert built.returncode == 0, built.stderr
    wheel = next(dist.glob("vision_lab-*.whl"))
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", str(venv)).returncode == 0
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    torch_spec = f"torch=={torch.__version__.split('+')[0]}"  # the same build as this environment: never CUDA here
    assert (r := _run(*pip, torch_spec, timeout=600)).returncode == 0, r.stderr
    assert (r := _run(*pip, str(wheel), timeout=600)).returncode == 0, r.stderr
    script = ("import vision_lab, vision_lab.kernels, vision_lab.ops as ops, pathlib\n"
              "from vision_lab.registry import load_all; load_all()\n"
              "assert 'site-packages' in vision_lab.__file__ and 'site-packages' in vision_lab.kernels.__file__\n"
              "print(vision_lab.__version__, ops.list_ops())")
    check = _run(str(venv / "bin" / "python"), "-c", script, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "layer_norm_2d" in check.stdout
    cli = _run(str(venv / "bin" / "vision-lab"), "list", cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr


def test_report_renders_gallery(tmp_path):
    script = f"""
import pathlib
from vision_lab.cli import build_report, find_notebook
index, rows = build_report([find_notebook("settings"), find_notebook("ops")], pathlib.Path({str(tmp_path)!r}), progress=False)
print([r["status"] for r in rows])
"""
    result = _run(sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    assert "['ok', 'ok']" in result.stdout
    index = (tmp_path / "index.html").read_text()
    assert 'href="00_settings.html"' in index and "03_ops.ipynb" in index and "<h2>Techniques</h2>" in index
    page = (tmp_path / "00_settings.html").read_text()
    assert "Lab settings" in page and "SettingsError" in page  # the executed notebook, outputs included


def test_every_generated_package_ships():
    import tomllib
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"vision_lab." + ".".join(p.parent.relative_to(ROOT / "vision_lab").parts)
             for p in (ROOT / "vision_lab").rglob("__init__.py") if p.parent != ROOT / "vision_lab"}
    missing = found - declared
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
