#!/usr/bin/env bash
# Instruction tuning (sft) of a DevOps model on QA pairs: the DevOps-Model seed's
# scripts/devops-model-sft.sh with only the entry point changed (src/train_bash.py -> -m harness train)
# and paths pointing into this repository. Run from the repository root on a GPU node:
#   MODEL=path_to_model OUTPUT=out/devops-sft bash training/examples/devops-model-sft.sh
# --template chatml is the one for Qwen-based models (DevOps-Model); --finetuning_type lora trains
# an adapter instead (harness eval --model OUTPUT takes either). Add --eval_devops_shots 0,5 to score
# the DevOps task at every save (needs --eval_devops_data_dir or HARNESS_DATA_DIR, else the Hub).
# Arguments given to this script are appended, so they override the ones above.
set -v

torchrun --nproc_per_node=${NPROC_PER_NODE:-8} --nnodes=${WORLD_SIZE:-1} --master_port=${MASTER_PORT:-29500} --master_addr=${MASTER_ADDR:-127.0.0.1} --node_rank=${RANK:-0} -m harness train \
    --deepspeed training/ds_zero2_offload.json \
    --stage sft \
    --model_name_or_path ${MODEL:-path_to_model} \
    --do_train \
    --report_to 'tensorboard' \
    --dataset devops_qa \
    --dataset_dir training/data \
    --template chatml \
    --finetuning_type full \
    --output_dir ${OUTPUT:-/mnt/llm/devopspal/model/trained} \
    --overwrite_cache \
    --per_device_train_batch_size 8 \
    --per_device_eval_batch_size 8 \
    --gradient_accumulation_steps 1 \
    --lr_scheduler_type cosine \
    --warmup_ratio 0.05 \
    --evaluation_strategy steps \
    --logging_steps 10 \
    --max_steps 1000 \
    --save_steps 100 \
    --eval_steps 100 \
    --learning_rate 5e-5 \
    --plot_loss \
    --max_source_length=2048 \
    --dataloader_num_workers 8 \
    --val_size 0.01 \
    --bf16 \
    --overwrite_output_dir \
    "$@"
