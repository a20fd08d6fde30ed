"""The walkthrough notebooks run top to bottom with small settings (nbclient)."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name, work, **env):
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert not any(cell.get("outputs") for cell in book.cells), f"{name}: outputs are committed"
    old = dict(os.environ)
    os.environ.update({"AVD_NB_WORK": str(work), "MPLBACKEND": "Agg", **env})
    try:
        NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return book


def outputs_text(book):
    return "\n".join(o.get("text", "") for c in book.cells for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.slow
def test_quickstart_distills_and_classifies(work):
    text = outputs_text(run_notebook("01_quickstart.ipynb", work, AVD_NB_EPOCHS="1", AVD_NB_STEPS="2"))
    assert "distilled image: (32, 32, 3) uint8" in text
    assert "AVD image    : [(" in text


@pytest.mark.slow
def test_train_avd_compares_lambdas(work):
    text = outputs_text(run_notebook("02_train_avd.ipynb", work, AVD_NB_STEPS="3", AVD_NB_LAMBDAS="1.0,0.5"))
    assert "lam=1.0: " in text and "lam=0.5: " in text and "rec_loss=" in text


@pytest.mark.slow
def test_reproduce_runs_the_protocol_on_demo_data(work):
    text = outputs_text(run_notebook("03_reproduce_ucf101.ipynb", work, AVD_NB_QUICK="1"))
    assert "AVD (RGB)" in text and "RGB" in text
