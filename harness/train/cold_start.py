"""Cold start: supervised fine-tuning of a hub model on a chat dataset before RL (the SFT stage of ARPO and AEPO).

A real-model tier may give its model block a ``cold_start`` (:class:`harness.data.chat_sft.ColdStartSpec`; named
recipes in config/cold_starts.yaml). Its jobs then start from the base model fine-tuned on that data, kept in
``models/sft-<key>/base`` (key: the hash of the whole model block, :func:`harness.results.store.base_model_key`). Rule ``cold_start_model`` (rules/models.smk, ``harness cold-start``)
builds it once, and every card and method with the same block shares it.

A port of the authors' recipe: ARPO README "Cold-Start SFT Stage" and ``LLaMA-Factory/arpo_train_sft/``
(``yaml/qwen.yaml``, ``dataset_info/dataset_info.json``, ``sft_train.sh``) of RUC-NLPIR/ARPO, read at
multi-agent-deep-research/ARPO@ff66660, with the LLaMA-Factory (LF) vendored there:

- **rows and encoding** (LF's sharegpt converter, its ``qwen`` template, its supervised processor): ported in
  :mod:`harness.data.chat_sft`.
- **training**: TRL's ``SFTTrainer`` on the encoded rows (``input_ids`` + ``labels``, rows in file order, shuffled
  by the Trainer's sampler with ``seed``), with the yaml's settings in ``trl``.

Departures, stated: TRL instead of LF (the same HF Trainer underneath). The process layout is the tier's
``resources`` (the authors: torchrun, 8 processes, DeepSpeed ZeRO-3 offload).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

from harness.config import ConfigError
from harness.data.chat_sft import TEMPLATES, check_spec, encoded_rows, fix_special_tokens, read_rows

SOURCE = ("ARPO README 'Cold-Start SFT Stage' + LLaMA-Factory/arpo_train_sft/yaml/qwen.yaml, "
          "dataset_info/dataset_info.json (RUC-NLPIR/ARPO @ff66660; LLaMA-Factory converter.py, template.py, "
          "processor/supervised.py as vendored there)")



# ------------------------------------------------------------------------------------------- training ------
def run_cold_start(model_spec: dict, out: Path, data_dir: Path, threads: int = 1) -> dict:
    """Fine-tune the model block's base model on its ``cold_start`` rows; write it to ``out`` (renamed into place
    when complete) with ``source.json`` (the base's source and this stage's record). Under ``accelerate launch``
    every process trains and saves (sharded weights are gathered); the main one writes."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from harness.data.realdata import load_hub_model
    from harness.results import content_hash

    spec = check_spec(model_spec.get("cold_start") or {}, "model/cold_start")
    torch.set_num_threads(threads)
    t0 = time.time()
    model, tok, base_source = load_hub_model({k: v for k, v in model_spec.items() if k != "cold_start"})
    fix_special_tokens(tok, TEMPLATES[spec.template])  # the saved tokenizer ends turns as the SFT data does
    rows, data_source = read_rows(spec.data, data_dir, spec.max_samples)
    train, stats = encoded_rows(rows, tok, spec)
    if not train:
        raise ConfigError(f"cold start: none of the {len(rows)} rows is trainable (skipped: {stats['skipped']})")
    set_seed(spec.seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # one path on every process (accelerate launch): transformers' save_model gathers sharded weights on all of
    # them and writes on the main one, which then renames the finished directory into place (as a train job does)
    tmp, trainer_dir = out.parent / f".{out.name}.launch.tmp", out.parent / f".{out.name}.trainer"
    args = SFTConfig(output_dir=str(trainer_dir), seed=spec.seed, report_to=[], save_strategy="no",
                     use_cpu=not torch.cuda.is_available(), remove_unused_columns=False, max_length=None,
                     packing=False, **spec.trl)
    trainer = SFTTrainer(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(train))
    main = trainer.accelerator.is_main_process
    if main and tmp.exists():
        shutil.rmtree(tmp)
    trainer.accelerator.wait_for_everyone()
    trainer.train()
    trainer.save_model(str(tmp))
    record = {"base": base_source, "cold_start": {
        "spec": dataclasses.asdict(spec), "source": SOURCE, "data": data_source, **stats,
        "rows_digest": content_hash([r["input_ids"] for r in train]), "steps": trainer.state.global_step,
        "processes": trainer.accelerator.num_processes, "eos_token": tok.eos_token,
        "log": [{k: v for k, v in e.items() if isinstance(v, (int, float))} for e in trainer.state.log_history],
        "wall_seconds": round(time.time() - t0, 1)}}
    if main:
        tok.save_pretrained(tmp)
        (tmp / "training_args.bin").unlink(missing_ok=True)
        (tmp / "source.json").write_text(json.dumps(record, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        shutil.rmtree(trainer_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return record
