"""Every notebook under nbs/, executed headless by papermill in the quick profile, as users run them."""
import re
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").rglob("*.ipynb")  # as the exporter: names starting with _ or . are scratch
                   if not any(part.startswith((".", "_")) for part in p.relative_to(ROOT / "nbs").parts))
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _describe_failure(nb: Path, output: Path, error: pm.PapermillExecutionError) -> str:
    """Notebook, failing cell (index and source) and the error, without terminal colour codes."""
    import nbformat
    traceback = ANSI.sub("", "\n".join(error.traceback[-12:]))
    cells = nbformat.read(output, as_version=4).cells if output.exists() else []
    text = error.source or (cells[error.cell_index].source if error.cell_index < len(cells) else "")
    source = "\n".join("    " + line for line in text.splitlines())
    return (f"{nb.relative_to(ROOT)}: cell {error.cell_index} (execution {error.exec_count}) failed\n"
            f"--- cell source ---\n{source}\n--- error ---\n{error.ename}: {error.evalue}\n{traceback}")


@pytest.mark.notebook
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[str(p.relative_to(ROOT / "nbs")) for p in NOTEBOOKS])
def test_notebook_runs(nb: Path, tmp_path: Path):
    output = tmp_path / nb.name  # never into nbs/
    failure = None
    try:
        pm.execute_notebook(str(nb), str(output), parameters={"profile": "quick"}, kernel_name="python3",
                            language="python", cwd=str(nb.parent), progress_bar=False, log_output=False,
                            execution_timeout=300)  # a hung cell fails its notebook instead of stalling CI
    except pm.PapermillExecutionError as error:
        failure = _describe_failure(nb, output, error)
    if failure:  # outside the except block, so pytest shows only the notebook's story
        pytest.fail(failure, pytrace=False)


def test_every_notebook_has_parameters_cell():
    import nbformat
    for nb in NOTEBOOKS:
        cells = nbformat.read(nb, as_version=4).cells
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb.relative_to(ROOT)}: needs exactly one cell tagged 'parameters'"
        assert "profile" in tagged[0].source, f"{nb.relative_to(ROOT)}: its parameters cell must define profile"
