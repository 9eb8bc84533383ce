#!/usr/bin/env bash
# GRPO with verl, rewarded by rlbound's verifiers, then measured with rlbound. A GPU box with verl:
#   pip install "verl==0.9.1"   # then "math-verify[antlr4_9_3]": verl's omegaconf pins antlr4 4.9
#   bash examples/verl_reward.sh Qwen/Qwen2.5-Math-1.5B math_train.jsonl math500
# Step 1 writes the training set in verl's format from an rlbound task (same prompts as
# `rlbound sample --template chat`); step 2 points verl's custom_reward_function at
# rlbound.integrations.verl.compute_score (it picks each row's verifier from extra_info);
# step 3 samples the last checkpoint and the base model and reports the boundary.
set -euo pipefail
model=${1:?usage: verl_reward.sh MODEL TRAIN_TASK EVAL_TASK}
train=${2:?usage: verl_reward.sh MODEL TRAIN_TASK EVAL_TASK}
eval_task=${3:?usage: verl_reward.sh MODEL TRAIN_TASK EVAL_TASK}
data=runs/verl-data; out=runs/verl-grpo
mkdir -p "$data"

# 1. the task as verl Parquet rows: data_source, prompt (chat messages), reward_model.ground_truth,
#    extra_info (index, problem_id, verifier)
python3 - "$train" "$data/train.parquet" <<'PY'
import sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from rlbound.integrations.verl import verl_rows
from rlbound.tasks.base import load_task
name = sys.argv[1]
task = load_task("file", path=name) if Path(name).suffix in (".jsonl", ".json", ".parquet") else load_task(name)
pq.write_table(pa.Table.from_pylist(verl_rows(task, template="chat")), sys.argv[2])
print(f"{sys.argv[2]}: {len(task)} problems, verifier {task.verifier}")
PY

# 2. train (verl's GRPO; only the data and reward lines are rlbound's)
python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    data.train_files="$data/train.parquet" data.val_files="$data/train.parquet" \
    data.train_batch_size=128 data.max_prompt_length=1024 data.max_response_length=2048 \
    actor_rollout_ref.model.path="$model" \
    actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 actor_rollout_ref.actor.optim.lr=1e-6 \
    reward.custom_reward_function.path=pkg://rlbound.integrations.verl \
    reward.custom_reward_function.name=compute_score \
    trainer.n_gpus_per_node=1 trainer.nnodes=1 trainer.total_training_steps=200 trainer.save_freq=50 \
    trainer.logger=console trainer.default_local_dir="$out"
# verl saves FSDP shards; merge the last one to a Hugging Face directory:
python3 -m verl.model_merger merge --backend fsdp \
    --local_dir "$out/global_step_200/actor" --target_dir "$out/hf"

# 3. measure base and RL on the evaluation task with the same chat prompts, then report
for who in base rl; do
    m=$model; [ "$who" = rl ] && m=$out/hf
    rlbound sample --task "$eval_task" --template chat --engine vllm --model "$m" \
        -n 256 --temperature 0.6 --max-tokens 2048 --out "runs/verl-$who" --label "$who"
done
rlbound report runs/verl-base runs/verl-rl --out reports/verl-grpo
