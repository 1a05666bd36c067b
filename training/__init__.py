"""Training: the DevOps-Model recipe's `pt` and `sft` stages, full or LoRA, DeepSpeed, behind `harness train`.

    args        LLaMA-Efficient-Tuning's arguments, parsed with transformers' Seq2SeqTrainingArguments
    registry    dataset_info.json: which file, which columns, which stage
    preprocess  rows → token blocks (pt) or rendered conversations with response-only labels (sft)
    lora        default LoRA targets per architecture, adding an adapter, merging one
    workflow    one run, top to bottom, ending in a checkpoint `harness eval` takes as it is
    devops_eval scoring the DevOps task with the harness engine at every save
    plot        --plot_loss

Training calls the engine (`harness`) to evaluate; the engine never imports training. The
conversation formats (`--template`) live in the engine (`harness.conversation`), where a chat front
end reuses them.
"""
