"""The whole conversion: check everything, then write the model folder under a temporary name and rename it."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from llmseg.model.convert_official.configs import (
    DINOV2_IMAGE_SIZE,
    ReleaseArchitecture,
    build_processor,
    dinov2_config,
    llava_config,
    official_config,
)
from llmseg.model.convert_official.load import MappedFile, load_model_states
from llmseg.model.convert_official.locate import SourceCheckpoint, locate_checkpoint
from llmseg.model.convert_official.plan import ConversionPlan, plan_conversion
from llmseg.model.convert_official.targets import adapter_outputs, check_part, meta_models, saved_names
from llmseg.model.convert_official.write import write_safetensors, write_shards

REPORT_FILE = "conversion_report.json"
LLAVA_DIR, DINOV2_DIR = "llava", "dinov2"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
DEFAULT_MAX_SHARD_SIZE = "5GB"


def convert_official(
    checkpoint: str | os.PathLike[str],
    *,
    base_tokenizer: str,
    sam_checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    step: int | None = None,
    dtype: str = "bfloat16",
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
) -> dict[str, Any]:
    """Convert the release's DeepSpeed checkpoint into the model folder ``out``; return the conversion report.

    Everything is checked (paths, keys, shapes, tokenizer) before anything is written, and the
    folder is assembled under a temporary name beside ``out`` and renamed at the end, so a
    failed run never leaves a half-written model folder behind.
    """
    from transformers import GenerationConfig
    from transformers.utils.hub import convert_file_size_to_int

    from llmseg.model import checkpoint as llmseg_checkpoint

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    shard_bytes = convert_file_size_to_int(max_shard_size)
    target = Path(out).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{target} already exists and is not an empty folder; choose a new --out or delete it")
    sam = Path(sam_checkpoint).expanduser().resolve()
    if not sam.is_file():
        raise ValueError(f"SAM checkpoint {sam} not found: download sam_vit_h_4b8939.pth and pass its path")

    source = locate_checkpoint(str(checkpoint), step)
    if source.note:
        print(f"note: {source.note}", file=sys.stderr)
    module, ignored = load_model_states(source.path)
    arch = ReleaseArchitecture.from_module(module)
    plan = plan_conversion(module, dinov2_grid=DINOV2_IMAGE_SIZE // arch.dinov2_patch_size)
    processor = build_processor(base_tokenizer, arch)
    llava, dinov2 = llava_config(arch, processor.tokenizer, dtype), dinov2_config(arch, dtype)
    models = meta_models(arch, llava, dinov2)
    region_state = {
        name: tensor
        for name, tensor in models["region_encoder"].state_dict().items()
        if not name.startswith(llmseg_checkpoint.BACKBONE_PREFIX)
    }
    expected = {part: models[part].state_dict() for part in ("llava", "dinov2", "selector")}
    for part, state in {**expected, "region_encoder": region_state}.items():
        check_part(plan.parts.get(part, {}), state, part)
    on_disk = {part: saved_names(models[part]) for part in ("llava", "dinov2")}
    config = official_config(
        arch, llava=str(target / LLAVA_DIR), dinov2=str(target / DINOV2_DIR), sam_checkpoint=str(sam), dtype=dtype
    )
    adapter = adapter_outputs(plan, config, processor, models["llava"])

    pages = MappedFile(source.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        for part, folder in (("llava", LLAVA_DIR), ("dinov2", DINOV2_DIR)):
            (staging / folder).mkdir()
            outputs = {saved: plan.parts[part][name] for name, saved in on_disk[part].items()}
            write_shards(
                staging / folder,
                outputs,
                dtype=DTYPES[dtype],
                max_shard_size=shard_bytes,
                release=lambda keys: pages.release(module[key] for key in keys),
                description=part,
            )
        llava.save_pretrained(staging / LLAVA_DIR)
        GenerationConfig.from_model_config(llava).save_pretrained(staging / LLAVA_DIR)
        processor.save_pretrained(staging / LLAVA_DIR)
        dinov2.save_pretrained(staging / DINOV2_DIR)
        write_safetensors(staging / llmseg_checkpoint.SELECTOR_FILE, plan.parts["selector"], dtype=DTYPES[dtype])
        write_safetensors(
            staging / llmseg_checkpoint.REGION_ENCODER_FILE, plan.parts["region_encoder"], dtype=DTYPES[dtype]
        )
        (staging / llmseg_checkpoint.ADAPTER_DIR).mkdir()
        write_safetensors(
            staging / llmseg_checkpoint.ADAPTER_DIR / llmseg_checkpoint.ADAPTER_WEIGHTS, adapter, dtype=DTYPES[dtype]
        )
        config.save_pretrained(staging)
        plan.parts["adapter"] = adapter
        report = conversion_report(source, module, ignored, plan, dtype)
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def conversion_report(
    source: SourceCheckpoint,
    module: Mapping[str, torch.Tensor],
    ignored: Mapping[str, str],
    plan: ConversionPlan,
    dtype: str,
) -> dict[str, Any]:
    """Where each source key went (``part:parameter``), which were dropped and why, and what was made."""
    mapped: dict[str, list[str]] = {}
    made: dict[str, str] = {}
    for part, outputs in plan.parts.items():
        for name, output in outputs.items():
            for key in output.sources:
                mapped.setdefault(key, []).append(f"{part}:{name}")
            if output.note:
                made[f"{part}:{name}"] = output.note
    unaccounted = set(module) - set(mapped) - set(plan.dropped)
    if unaccounted:  # plan_conversion maps or drops every key; this guards that promise
        raise RuntimeError(f"conversion left source keys unaccounted for: {sorted(unaccounted)[:5]}")
    return {
        "source": {"file": str(source.path), "step": source.step, "note": source.note},
        "dtype": dtype,
        "ignored_entries": dict(ignored),
        "mapped": {key: sorted(targets) for key, targets in mapped.items()},
        "dropped": dict(plan.dropped),
        "made": made,
        "counts": {"source_keys": len(module), "mapped": len(mapped), "dropped": len(plan.dropped)},
    }
