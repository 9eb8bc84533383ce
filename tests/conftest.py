"""Shared test fixtures: paths to the benchmark data beside the repository, a tiny trained model,
and one real vLLM OpenAI-compatible server per session (``vllm_server``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


# ------------------------------------------------------------------------------ a real vLLM server
SERVED_MODEL = "arith"
"""The name the session's vLLM server serves the exported arithmetic model under."""
SERVER_CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}A: {% endif %}")


class VllmServer:
    """``python -m vllm.entrypoints.openai.api_server`` in its own process group, log in a file
    (uvicorn's access log lists every request)."""

    def __init__(self, model_dir: Path, log: Path, chat_template: Path | None = None, served: str = SERVED_MODEL):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", served, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", "float32", "--enforce-eager", "-O0", "--kv-cache-memory-bytes", str(256 << 20),
               "--max-num-batched-tokens", "16384", "--disable-log-stats"]
        if chat_template is not None:
            cmd += ["--chat-template", str(chat_template)]
        self._log_file = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})

    def wait_ready(self, timeout_s: float = 300) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.kill()
        pytest.fail(f"vLLM server not ready after {timeout_s} s:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log_file.close()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def requests(self, path: str) -> int:
        """How many requests to ``path`` (e.g. ``/v1/chat/completions``) the server has logged."""
        self._log_file.flush()
        return sum(f'"POST {path} HTTP' in line or f'"GET {path} HTTP' in line
                   for line in self.log.read_text(errors="replace").splitlines())


@pytest.fixture(scope="session")
def vllm_server(exported_arithmetic_model, tmp_path_factory):
    """One vLLM server for the whole session, serving the exported arithmetic model as
    ``SERVED_MODEL`` with a small chat template (so ``endpoint=chat`` works). Never killed by a
    test; a test that kills a server starts its own."""
    pytest.importorskip("vllm")
    root = tmp_path_factory.mktemp("vllm-server")
    (root / "chat.jinja").write_text(SERVER_CHAT_TEMPLATE)
    server = VllmServer(exported_arithmetic_model["hf"], root / "server.log", chat_template=root / "chat.jinja")
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()
