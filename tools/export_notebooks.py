"""Regenerate `vision_lab/` and `kernels/` from the notebooks, clean the notebooks, refresh the README table.

`--check` changes nothing and exits 1 when the committed code, notebooks or README are out of date.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from nbdev.clean import clean_nb
from nbdev.doclinks import _build_modidx
from nbdev.export import nb_export

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"vision_lab": "nbs", "kernels": "nbs/kernels"}  # generated folder → its notebooks
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def notebooks(root: Path):
    """(notebook, generated folder) pairs: nbs/kernels/* → kernels/, every other notebook → vision_lab/."""
    for nb in sorted((root / "nbs").rglob("*.ipynb")):
        rel = nb.relative_to(root / "nbs")
        if any(part.startswith((".", "_")) for part in rel.parts):
            continue
        yield nb, "kernels" if rel.parts[0] == "kernels" else "vision_lab"


def clean_text(nb_path: Path) -> str:
    """The notebook as nbdev-clean writes it (no outputs, no execution counts, only allowed metadata)."""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    clean_nb(nb, clear_all=False, allowed_metadata_keys={"kernelspec"}, allowed_cell_metadata_keys={"tags"},
             clean_ids=True)
    # every notebook runs on the standard Python kernel (papermill and JupyterLab read this)
    nb["metadata"]["kernelspec"] = KERNELSPEC
    for cell in nb["cells"]:  # nbdev keeps outputs of cells it cannot run headless; the lab commits none
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def export_into(workdir: Path) -> None:
    """Export every notebook of ROOT into fresh folders under `workdir`."""
    shutil.copy(ROOT / "pyproject.toml", workdir / "pyproject.toml")
    shutil.copytree(ROOT / "nbs", workdir / "nbs")
    for folder in TARGETS:
        (workdir / folder).mkdir()
    (workdir / "vision_lab" / "py.typed").touch()
    for nb, folder in notebooks(workdir):
        nb_export(nb, lib_path=workdir / folder)
    for package in sorted((workdir / "vision_lab").rglob("*")):
        # nbdev writes nbs/<family>/*.ipynb into vision_lab/<family>/ but makes no package of the folder
        if package.is_dir() and package.name != "__pycache__" and not (package / "__init__.py").exists():
            (package / "__init__.py").write_text(f'"""The {package.name} family\'s technique modules '
                                                 f'(generated from nbs/{package.name}/)."""\n')
    cwd = os.getcwd()
    try:
        os.chdir(workdir)
        _build_modidx(workdir / "vision_lab", skip_exists=False)
    finally:
        os.chdir(cwd)


def generated_files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def readme_text() -> str:
    """README.md with the technique table regenerated from the registry (in a fresh interpreter)."""
    code = ("import sys, pathlib; from vision_lab.registry import render_readme; "
            "sys.stdout.write(render_readme(pathlib.Path('README.md').read_text(encoding='utf-8')))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def main(argv=None) -> int:
    os.environ.pop("IN_TEST", None)  # nbdev skips building the module index under test; this tool always builds it
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="report what is out of date, change nothing")
    args = parser.parse_args(argv)
    problems = []
    for nb, _ in notebooks(ROOT):
        text = clean_text(nb)
        if nb.read_text(encoding="utf-8") != text:
            if args.check:
                problems.append(f"{nb.relative_to(ROOT)}: not clean (outputs, execution counts or metadata)")
            else:
                nb.write_text(text, encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        export_into(Path(tmp))
        for folder in TARGETS:
            fresh, committed = generated_files(Path(tmp) / folder), generated_files(ROOT / folder)
            for name in sorted(fresh.keys() | committed.keys()):
                target = ROOT / folder / name
                if name not in fresh:
                    problems.append(f"{folder}/{name}: no notebook generates it") if args.check else target.unlink()
                elif name not in committed or not filecmp.cmp(fresh[name], committed[name], shallow=False):
                    if args.check:
                        problems.append(f"{folder}/{name}: differs from what its notebook exports")
                    else:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(fresh[name], target)
    readme = readme_text()
    if (ROOT / "README.md").read_text(encoding="utf-8") != readme:
        if args.check:
            problems.append("README.md: the technique table is not the registry's (run `make export`)")
        else:
            (ROOT / "README.md").write_text(readme, encoding="utf-8")
    for problem in problems:
        print(problem)
    if args.check and problems:
        print(f"{len(problems)} problem(s): run `make export` and commit the result")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
