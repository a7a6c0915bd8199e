"""The baseline: a minimal transformers Trainer LoRA script, as a user would write it.

`python -m bench.train_trainer_script --gguf FILE --records records.jsonl --steps N --batch B
--max-length L --out DIR` loads the GGUF (dequantizing it, as such a script does every time),
rebuilds it as a trainable model in memory, tokenises the chats with the chat template (loss on
the reply only), trains N steps with Trainer, saves the adapter, and prints one JSON line: the
tokens it trained on, its train time, its tokens per second and its peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def load_plain_model(gguf: Path):  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # transformers marks a GGUF model as quantized and will not train it: rebuild it plain.
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(type(quantized.config).from_dict(config))
    plain.load_state_dict(quantized.state_dict())
    plain.config.use_cache = False
    return tokenizer, plain


def tokenised(records: Path, tokenizer, max_length: int) -> list[dict[str, list[int]]]:  # type: ignore[no-untyped-def]
    examples = []
    for line in records.read_text(encoding="utf-8").splitlines():
        messages = [
            {"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]
        ]
        prompt = tokenizer.apply_chat_template(
            messages[:-1], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
        prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels = [-100] * min(prompt_length, len(ids)) + ids[prompt_length:]
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return examples


def train(options: argparse.Namespace) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    tokenizer, model = load_plain_model(Path(options.gguf))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets)
    model = get_peft_model(model, lora)
    data = tokenised(Path(options.records), tokenizer, options.max_length)

    class StepClock(TrainerCallback):  # time inside the steps only, as the runner reports it
        steps: ClassVar[list[float]] = []

        def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            StepClock.steps.append(time.perf_counter() - self.began)

    arguments = TrainingArguments(
        output_dir=options.out,
        per_device_train_batch_size=options.batch,
        max_steps=options.steps,
        learning_rate=2e-4,
        lr_scheduler_type="cosine",
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=42,
        use_cpu=True,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=data,
        data_collator=collator,
        callbacks=[StepClock()],
    )
    trainer.train()
    model.save_pretrained(str(Path(options.out) / "adapter"))
    tokens = trainer.state.num_input_tokens_seen
    return {"tokens": tokens, "train_seconds": sum(StepClock.steps), "steps": StepClock.steps}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.train_trainer_script")
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    began = time.perf_counter()
    report = train(options)
    report["tokens_per_second"] = report["tokens"] / report["train_seconds"]
    report["seconds"] = time.perf_counter() - began
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
