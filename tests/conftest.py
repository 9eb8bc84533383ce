"""Shared test fixtures: paths to the benchmark data beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's models on one thread, then restore the setting.

    Tiny tensors gain nothing from threads, and on a small shared CPU torch's OpenMP threads
    spin-wait against other processes (a decode step measured 20x slower with 2 threads than with
    1 on a loaded 2-core machine). Modules opt in with ``pytestmark``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def quiet():
    """No progress bars during the test (restored afterwards)."""
    from rlbound.progress import set_quiet

    set_quiet(True)
    yield
    set_quiet(False)


@pytest.fixture(scope="session")
def exported_arithmetic_model(tmp_path_factory) -> dict[str, Path]:
    """A tiny model trained briefly on arithmetic (it solves some problems at difficulty 1), as its
    tiny directory ("tiny") and exported as a Hugging Face Llama directory ("hf"), made once per
    test session for the engines that load Hugging Face models (hf, vllm, a server)."""
    from rlbound.engines.tiny.export import export_hf
    from rlbound.engines.tiny.train import fit_arithmetic_model

    root = tmp_path_factory.mktemp("arithmetic-model")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only spin against the other processes
    try:
        trained = fit_arithmetic_model(root / "tiny", difficulty=1, n_train=2000, steps=120, eval_n=0)
    finally:
        torch.set_num_threads(before)
    export_hf(trained.model_dir, root / "hf")
    return {"tiny": Path(trained.model_dir), "hf": root / "hf"}
