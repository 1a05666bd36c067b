#!/usr/bin/env bash
# Continued pre-training (pt) of a DevOps model on a document corpus: the DevOps-Model seed's
# scripts/devops-model-pt.sh with only the entry point changed (src/train_bash.py -> -m harness train)
# and paths pointing into this repository. Run from the repository root on a GPU node:
#   MODEL=path_to_model OUTPUT=out/devops-pt bash training/examples/devops-model-pt.sh
# Multi-node: set WORLD_SIZE (nodes), RANK (this node), MASTER_ADDR and MASTER_PORT as the seed did.
# Your own corpus: register it in a dataset_info.json (see training/data/README.md) and change
# --dataset/--dataset_dir. The seed's deepspeed config (ZeRO-2, optimizer offloaded to the CPU)
# is training/ds_zero2_offload.json; training/ds_zero2.json and ds_zero3.json keep the optimizer on the GPU.
# The bundled example corpus holds about 1,500 tokens, less than one 2048-token block: to try the
# script on it, append --max_source_length=256.
# Arguments given to this script are appended, so they override the ones above.
set -v

torchrun --nproc_per_node=${NPROC_PER_NODE:-8} --nnodes=${WORLD_SIZE:-1} --master_port=${MASTER_PORT:-29500} --master_addr=${MASTER_ADDR:-127.0.0.1} --node_rank=${RANK:-0} -m harness train \
    --deepspeed training/ds_zero2_offload.json \
    --stage pt \
    --model_name_or_path ${MODEL:-path_to_model} \
    --do_train \
    --report_to 'tensorboard' \
    --dataset devops_corpus \
    --dataset_dir training/data \
    --template default \
    --finetuning_type full \
    --output_dir ${OUTPUT:-path_to_output_checkpoint_path} \
    --overwrite_cache \
    --per_device_train_batch_size 8 \
    --per_device_eval_batch_size 8 \
    --gradient_accumulation_steps 1 \
    --lr_scheduler_type cosine \
    --warmup_ratio 0.05 \
    --evaluation_strategy steps \
    --logging_steps 10 \
    --max_steps 1000 \
    --save_steps 1000 \
    --eval_steps 1000 \
    --learning_rate 5e-6 \
    --plot_loss \
    --max_source_length=2048 \
    --dataloader_num_workers 8 \
    --val_size 0.01 \
    --bf16 \
    --overwrite_output_dir \
    "$@"
