"""Convert the authors' released LLM-Seg DeepSpeed checkpoint into a folder ``LLMSeg.from_pretrained`` loads.

The release (``JCdesu/LLM-Seg-deepspeed`` and its siblings on the Hub) is a DeepSpeed training
state: ``ckpt_model/global_step<N>/mp_rank_00_model_states.pt``, one 31 GB pickle whose
``"module"`` entry holds every weight in bf16 with the LoRA factors unmerged. Every key of it is
mapped (layout in ``official-checkpoint.md``), deliberately dropped with a reason, or rejected
by name. The output folder, in ``llmseg.model.checkpoint``'s layout:

    config.json                  LLMSegConfig with the release's choices (absolute paths to the parts)
    llava/                       LlavaForConditionalGeneration (LoRA merged): the weight files save_pretrained
                                 would write, byte for byte, with its processor and tokenizer
    dinov2/                      Dinov2Model with the release's 64x64 position grid baked in (likewise)
    region_encoder.safetensors   the 1x1 conv (``lisa_dino_conv``)
    selector.safetensors         the selection module (``text_hidden_fcs`` and ``lisa_*``)
    adapter/                     the peft adapter LLMSeg expects on top of llava/: just the [SEG] rows
    conversion_report.json       where every source key went, or why it was dropped

The file is read memory-mapped and the output written tensor by tensor, each tensor's source
pages released once it is on disk, so conversion needs far less RAM than the file's size.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import mmap
import os
import pickle
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from llmseg.model.config import (
    LLMSegConfig,
    ProposalConfig,
    RegionEncoderConfig,
    SelectionConfig,
    SelectorConfig,
    VLMConfig,
)

MODEL_STATES_FILE = "mp_rank_00_model_states.pt"
SOURCE_PREFIX = "base_model.model."
REPORT_FILE = "conversion_report.json"
LLAVA_DIR, DINOV2_DIR = "llava", "dinov2"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
DEFAULT_MAX_SHARD_SIZE = "5GB"
_SAFETENSORS_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}

# The release's LoRA: alpha 16 (the rank, 8, is read from the factors' shapes).
RELEASE_LORA_ALPHA = 16
# Tokens the release appended to LLaMA's 32000, in id order.
EXTRA_TOKENS = ("<im_patch>", "<im_start>", "<im_end>", "[SEG]")
# Widths the checkpoint cannot reveal: LLaMA's head size, ViT-L's head size (CLIP and DINOv2), fusion heads.
LLAMA_HEAD_DIM, VIT_HEAD_DIM, FUSION_HEADS = 128, 64, 8
# The release's DINOv2 input side (64 x 64 patches of 14 px).
DINOV2_IMAGE_SIZE = 896

_STEP_DIR = re.compile(r"global_step(\d+)")
_OPTIMIZER_STATES = re.compile(r".*_optim_states\.pt")
_MODEL_STATES = re.compile(r"mp_rank_\d+_model_states\.pt")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
_HUB_MODEL_STATES = re.compile(r"(?:.*/)?global_step(\d+)/" + re.escape(MODEL_STATES_FILE))

_IGNORED_ENTRY_REASONS = {
    "frozen_param_fragments": "DeepSpeed's second copy of the frozen weights, already in 'module'",
}
_IGNORED_ENTRY_DEFAULT = "DeepSpeed training state, not needed for inference"


# -- where the checkpoint is ----------------------------------------------------------------


@dataclass(frozen=True)
class SourceCheckpoint:
    """The model-states file to read, the training step it belongs to, and how it was chosen."""

    path: Path
    step: int | None
    note: str | None = None


def locate_checkpoint(checkpoint: str, step: int | None = None) -> SourceCheckpoint:
    """Find ``mp_rank_00_model_states.pt`` from a file, a folder (repository, ``ckpt_model`` or step) or a Hub id.

    Without ``step``, a folder with several ``global_step*`` folders gives the highest step (said
    in ``note``); with it, that step must exist.
    """
    path = Path(checkpoint).expanduser()
    if path.is_file():
        if step is not None:
            raise ValueError("--step chooses among global_step* folders: pass the checkpoint folder, not a file")
        _check_model_states_name(path)
        match = _STEP_DIR.fullmatch(path.parent.name)
        return SourceCheckpoint(path, int(match.group(1)) if match else None)
    if path.is_dir():
        return _locate_in_folder(path, step)
    if _HUB_ID.fullmatch(checkpoint):
        return _download_from_hub(checkpoint, step)
    raise ValueError(f"{checkpoint} is neither a file, a folder nor a Hub repository id (owner/name)")


def _check_model_states_name(path: Path) -> None:
    if _OPTIMIZER_STATES.fullmatch(path.name):
        raise ValueError(f"{path} holds optimiser states; pass {MODEL_STATES_FILE} or the folder holding it")
    if path.name != MODEL_STATES_FILE:
        raise ValueError(f"{path} is not a DeepSpeed model-states file: expected a file named {MODEL_STATES_FILE}")


def _locate_in_folder(folder: Path, step: int | None) -> SourceCheckpoint:
    if (folder / "ckpt_model").is_dir():
        folder = folder / "ckpt_model"
    steps = {int(m.group(1)): p for p in folder.iterdir() if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))}
    chosen, note = None, None
    if steps:
        chosen, note = _choose_step(sorted(steps), step, str(folder))
        folder = steps[chosen]
    elif step is not None:
        raise ValueError(f"--step {step} was given but {folder} has no global_step* folders")
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    if MODEL_STATES_FILE not in names:
        raise ValueError(f"no {MODEL_STATES_FILE} and no global_step* folder in {folder}: wrong folder?")
    unknown = [name for name in names if name != MODEL_STATES_FILE and not _OPTIMIZER_STATES.fullmatch(name)]
    if unknown:
        parallel = any(map(_MODEL_STATES.fullmatch, unknown))
        extra = " (a model-parallel checkpoint, which the release is not)" if parallel else ""
        raise ValueError(
            f"unexpected file(s) in {folder}: {', '.join(unknown)}{extra}; the release has only "
            f"{MODEL_STATES_FILE} and optimiser shards there"
        )
    return SourceCheckpoint(folder / MODEL_STATES_FILE, chosen, note)


def _choose_step(available: list[int], step: int | None, where: str) -> tuple[int, str | None]:
    if step is not None:
        if step not in available:
            raise ValueError(f"no global_step{step} in {where}; available steps: {', '.join(map(str, available))}")
        return step, None
    if len(available) == 1:
        return available[0], None
    latest = available[-1]
    return latest, f"using global_step{latest}, the latest of {len(available)} steps (--step picks another)"


def _download_from_hub(repo_id: str, step: int | None) -> SourceCheckpoint:
    """Download only the model-states file of the chosen step (not the optimiser shards)."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        files = HfApi().list_repo_files(repo_id)
        candidates = {int(m.group(1)): name for name in files if (m := _HUB_MODEL_STATES.fullmatch(name))}
        if not candidates:
            raise ValueError(f"the Hub repository {repo_id} has no global_step*/{MODEL_STATES_FILE}")
        chosen, note = _choose_step(sorted(candidates), step, repo_id)
        path = hf_hub_download(repo_id, candidates[chosen])
    except (HfHubHTTPError, OSError) as error:
        raise ValueError(
            f"could not fetch {repo_id} from the Hub ({str(error).splitlines()[0]}); "
            "download the repository yourself and pass its folder"
        ) from None
    return SourceCheckpoint(Path(path), chosen, note)


# -- reading it ------------------------------------------------------------------------------


def load_model_states(path: Path) -> tuple[Mapping[str, torch.Tensor], dict[str, str]]:
    """The ``"module"`` weights of a DeepSpeed model-states file, memory-mapped, and the other entries ignored.

    Tries ``weights_only=True`` first; DeepSpeed can pickle more than tensors and plain
    containers, so it falls back to full unpickling, which runs code from the file: acceptable
    only because the file is the authors' own release (a trusted source).
    """
    try:
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except pickle.UnpicklingError:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except (ModuleNotFoundError, AttributeError) as error:  # a class this environment does not define
        raise ValueError(
            f"{path} pickles objects this environment cannot rebuild ({error}); install the package that "
            "defines them (DeepSpeed) and retry"
        ) from None
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"{path} cannot be read as a PyTorch checkpoint ({str(error).splitlines()[0]}); "
            "it is probably truncated or corrupt: download it again"
        ) from None
    if not isinstance(state, Mapping) or not isinstance(state.get("module"), Mapping):
        found = ", ".join(map(str, state)) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"{path} is not a DeepSpeed model-states file: no 'module' entry (found: {found})")
    module = state["module"]
    for key, value in module.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"'module' entry {key!r} of {path} is a {type(value).__name__}, not a tensor")
    ignored = {str(key): _IGNORED_ENTRY_REASONS.get(str(key), _IGNORED_ENTRY_DEFAULT) for key in state}
    del ignored["module"]
    return module, ignored


class MappedFile:
    """Gives back the pages of a memory-mapped file that conversion has finished with.

    Pages read through the mapping stay in the process's resident set until memory pressure
    evicts them, so a 31 GB file would look like 31 GB of RSS by the end. ``MADV_DONTNEED`` on
    a read-only file mapping just drops them (a later read faults them in again from the file).
    Only ranges that /proc/self/maps shows as mapped from this file are touched: on other
    memory the call would discard data. Linux only; elsewhere ``release`` does nothing.
    """

    def __init__(self, path: Path) -> None:
        self._ranges: list[tuple[int, int]] = []
        if not sys.platform.startswith("linux"):
            return
        target = str(path.resolve())
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() == target:
                    start, end = (int(value, 16) for value in fields[0].split("-"))
                    self._ranges.append((start, end))
        self._madvise = ctypes.CDLL(None, use_errno=True).madvise if self._ranges else None
        if self._madvise is not None:
            self._madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    def release(self, tensors: Iterable[torch.Tensor]) -> None:
        if self._madvise is None:
            return
        page = mmap.PAGESIZE
        for tensor in tensors:
            storage = tensor.untyped_storage()
            start = storage.data_ptr() // page * page
            end = -(-(storage.data_ptr() + storage.nbytes()) // page) * page
            if any(low <= start and end <= high for low, high in self._ranges):
                self._madvise(start, end - start, mmap.MADV_DONTNEED)


# -- the key mapping -------------------------------------------------------------------------


@dataclass
class Output:
    """One tensor of the converted model: its shape, the source keys it comes from, how to make it.

    ``make`` returns the tensor in any float dtype; the writer casts it once to the output dtype.
    ``note`` says how a synthesised tensor (no source) or a transformed one was made.
    """

    shape: tuple[int, ...]
    sources: tuple[str, ...]
    make: Callable[[], torch.Tensor]
    note: str = ""


@dataclass
class ConversionPlan:
    """Every output tensor per part (runtime state-dict names), and every dropped source key with its reason."""

    parts: dict[str, dict[str, Output]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)

    def add(self, part: str, name: str, output: Output) -> None:
        outputs = self.parts.setdefault(part, {})
        if name in outputs:
            raise ValueError(f"checkpoint keys {outputs[name].sources} and {output.sources} both map to {part}:{name}")
        outputs[name] = output


_LLAMA = re.compile(
    r"model\.(embed_tokens\.weight|norm\.weight|layers\.\d+\.(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.weight"
    r"|layers\.\d+\.(?:input|post_attention)_layernorm\.weight)"
)
_LORA = re.compile(r"model\.(layers\.\d+\.self_attn\.[qv]_proj)\.lora_([AB])\.default\.weight")
_CLIP = re.compile(r"model\.vision_tower\.vision_tower\.vision_model\.(.+)")
_DINOV2 = re.compile(r"model\.visual_model_dinov2\.(.+)")
_DINOV2_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_FUSION_RENAMES = (
    ("model.text_hidden_fcs.0.", "selector", "text_projection."),
    ("model.lisa_attention_layers.", "selector", "blocks."),
    ("model.lisa_final_attn.", "selector", "final_attn."),
    ("model.lisa_norm_final_attn.", "selector", "norm_final_attn."),
    ("model.lisa_iou_head.", "selector", "iop_head."),
    ("model.lisa_embedding_head.", "selector", "embedding_head."),
    ("model.lisa_dino_conv.", "region_encoder", "conv."),
)
_DINOV2_RENAMES = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
# Per block: modules with a weight and a bias, then the layer scales.
_DINOV2_BLOCK_RENAMES = {
    "norm1": "norm1",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "attn.proj": "attention.o_proj",
}
_DINOV2_LAYER_SCALES = {"ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"}
_DROPPED = (
    (re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq"), "rotary frequencies, rebuilt from the config"),
    (
        re.compile(r"model\.vision_tower\.vision_tower\.vision_model\.embeddings\.position_ids"),
        "position index buffer, rebuilt by CLIP",
    ),
    (
        re.compile(r"model\.visual_model\..+"),
        "the release's SAM ViT-H copy: proposals come from the original SAM checkpoint (--sam-checkpoint)",
    ),
)


def plan_conversion(module: Mapping[str, torch.Tensor], *, dinov2_grid: int) -> ConversionPlan:
    """Map every key of the release's ``module`` dict; a key the release does not have stops with its name.

    dinov2_grid: patches per side of the DINOv2 input (64 for the release's 896 px).
    """
    from llmseg.model.region_encoder import official_position_embeddings

    plan = ConversionPlan()
    lora: dict[str, dict[str, str]] = {}
    for key, tensor in module.items():
        name = key.removeprefix(SOURCE_PREFIX) if key.startswith(SOURCE_PREFIX) else None
        if name is None:
            raise _unexpected(key)
        if reason := next((why for pattern, why in _DROPPED if pattern.fullmatch(name)), None):
            plan.dropped[key] = reason
        elif match := _LORA.fullmatch(name):
            lora.setdefault(SOURCE_PREFIX + f"model.{match.group(1)}.weight", {})[match.group(2)] = key
        elif match := _LLAMA.fullmatch(name):
            plan.add("llava", f"model.language_model.{match.group(1)}", _copy(key, tensor))
        elif name == "lm_head.weight":
            plan.add("llava", "lm_head.weight", _copy(key, tensor))
        elif match := _CLIP.fullmatch(name):
            plan.add("llava", f"model.vision_tower.{match.group(1)}", _copy(key, tensor))
        elif name in ("model.mm_projector.weight", "model.mm_projector.bias"):
            plan.add("llava", f"model.multi_modal_projector.linear_1.{name.rsplit('.', 1)[1]}", _copy(key, tensor))
        elif match := _DINOV2.fullmatch(name):
            _plan_dinov2(plan, key, match.group(1), tensor, dinov2_grid, official_position_embeddings)
        elif rename := next((r for r in _FUSION_RENAMES if name.startswith(r[0])), None):
            prefix, part, target = rename
            plan.add(part, target + name.removeprefix(prefix), _copy(key, tensor))
        else:
            raise _unexpected(key)
    _plan_lora_merges(plan, module, lora)
    _plan_identity_projector(plan)
    return plan


def _unexpected(key: str) -> ValueError:
    return ValueError(f"unexpected key {key!r} in the checkpoint: this converter knows only the LLM-Seg release's keys")


def _copy(key: str, tensor: torch.Tensor) -> Output:
    return Output(tuple(tensor.shape), (key,), lambda: tensor)


def _plan_dinov2(
    plan: ConversionPlan,
    key: str,
    name: str,
    tensor: torch.Tensor,
    grid: int,
    official_grid: Callable[[torch.Tensor, int], torch.Tensor],
) -> None:
    """torch.hub DINOv2 names -> ``Dinov2Model``; fused qkv split in three; the position grid pre-resized."""
    if name in _DINOV2_RENAMES:
        plan.add("dinov2", _DINOV2_RENAMES[name], _copy(key, tensor))
        return
    if name == "pos_embed":
        shape = (1, grid * grid + 1, tensor.shape[-1])
        note = f"the release's bicubic (grid + 0.1) / {math.isqrt(tensor.shape[1] - 1)} resize to {grid}x{grid}"
        output = Output(shape, (key,), lambda: official_grid(tensor, grid), note)
        plan.add("dinov2", "embeddings.position_embeddings", output)
        return
    match = _DINOV2_BLOCK.fullmatch(name)
    if match is None:
        raise _unexpected(key)
    layer, rest = match.groups()
    prefix = f"encoder.layer.{layer}."
    module_name, _, kind = rest.rpartition(".")
    if module_name == "attn.qkv":
        width = tensor.shape[0] // 3
        for index, target in enumerate(("q_proj", "k_proj", "v_proj")):
            rows = slice(index * width, (index + 1) * width)

            # A clone, not a view: safetensors refuses tensors that share memory.
            def make(rows: slice = rows) -> torch.Tensor:
                return tensor[rows].clone()

            output = Output((width, *tensor.shape[1:]), (key,), make, f"rows {rows.start}:{rows.stop} of qkv")
            plan.add("dinov2", f"{prefix}attention.{target}.{kind}", output)
    elif rest in _DINOV2_LAYER_SCALES:
        plan.add("dinov2", prefix + _DINOV2_LAYER_SCALES[rest], _copy(key, tensor))
    elif module_name in _DINOV2_BLOCK_RENAMES and kind in ("weight", "bias"):
        plan.add("dinov2", f"{prefix}{_DINOV2_BLOCK_RENAMES[module_name]}.{kind}", _copy(key, tensor))
    else:
        raise _unexpected(key)


def _plan_lora_merges(
    plan: ConversionPlan, module: Mapping[str, torch.Tensor], lora: dict[str, dict[str, str]]
) -> None:
    """Replace each LoRA-wrapped projection's plain copy by W + (alpha / r) * B @ A, computed in fp32."""
    for base_key, factors in lora.items():
        if set(factors) != {"A", "B"}:
            missing = "lora_B" if "A" in factors else "lora_A"
            raise ValueError(f"the checkpoint has {next(iter(factors.values()))!r} but not its {missing} partner")
        if base_key not in module:
            raise ValueError(f"the checkpoint has LoRA factors {factors['A']!r} but no base weight {base_key!r}")
        name = "model.language_model." + base_key.removeprefix(SOURCE_PREFIX + "model.")
        weight, down, up = module[base_key], module[factors["A"]], module[factors["B"]]
        rank = down.shape[0]
        if up.shape != (weight.shape[0], rank) or down.shape != (rank, weight.shape[1]):
            raise ValueError(
                f"LoRA factors of {base_key!r} have shapes {tuple(down.shape)} and {tuple(up.shape)}, "
                f"which do not fit its weight {tuple(weight.shape)}"
            )
        scale = RELEASE_LORA_ALPHA / rank

        def merge(
            weight: torch.Tensor = weight, down: torch.Tensor = down, up: torch.Tensor = up, scale: float = scale
        ) -> torch.Tensor:
            return torch.addmm(weight.float(), up.float(), down.float(), alpha=scale)

        note = f"merged LoRA: W + {RELEASE_LORA_ALPHA}/{rank} * B @ A in float32"
        plan.parts["llava"][name] = Output(tuple(weight.shape), (base_key, factors["A"], factors["B"]), merge, note)


def _plan_identity_projector(plan: ConversionPlan) -> None:
    """The release's projector is one Linear; LLaVA's is Linear -> act -> Linear, so act = identity, linear_2 = I."""
    linear_1 = plan.parts.get("llava", {}).get("model.multi_modal_projector.linear_1.weight")
    if linear_1 is None:
        raise ValueError(f"the checkpoint has no {SOURCE_PREFIX}model.mm_projector.weight (the image projector)")
    width = linear_1.shape[0]
    plan.add(
        "llava",
        "model.multi_modal_projector.linear_2.weight",
        Output((width, width), (), lambda: torch.eye(width), "identity: the release has a single Linear"),
    )
    plan.add(
        "llava",
        "model.multi_modal_projector.linear_2.bias",
        Output((width,), (), lambda: torch.zeros(width), "zero: the release has a single Linear"),
    )


# -- sizes and configs -----------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseArchitecture:
    """Sizes read from the checkpoint's tensor shapes: the 7B release, or a miniature of it in tests."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    clip_width: int
    clip_intermediate_size: int
    clip_layers: int
    clip_patch_size: int
    clip_image_size: int
    dinov2_width: int
    dinov2_layers: int
    dinov2_mlp_ratio: int
    dinov2_patch_size: int
    fusion_dim: int
    fusion_depth: int
    fusion_mlp_dim: int
    iop_hidden: int
    embedding_hidden: int

    @classmethod
    def from_module(cls, module: Mapping[str, torch.Tensor]) -> ReleaseArchitecture:
        def shape(name: str) -> tuple[int, ...]:
            key = SOURCE_PREFIX + name
            if key not in module:
                raise ValueError(f"the checkpoint lacks {key!r}: is this the LLM-Seg release's model-states file?")
            return tuple(module[key].shape)

        def count(pattern: str) -> int:
            regex = re.compile(re.escape(SOURCE_PREFIX) + pattern)
            return len({m.group(1) for key in module if (m := regex.match(key))})

        clip = "model.vision_tower.vision_tower.vision_model."
        dinov2 = "model.visual_model_dinov2."
        vocab_size, hidden_size = shape("model.embed_tokens.weight")
        clip_width, _, clip_patch, _ = shape(clip + "embeddings.patch_embedding.weight")
        clip_positions = shape(clip + "embeddings.position_embedding.weight")[0]
        dinov2_width, _, dinov2_patch, _ = shape(dinov2 + "patch_embed.proj.weight")
        return cls(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=shape("model.layers.0.mlp.gate_proj.weight")[0],
            num_layers=count(r"model\.layers\.(\d+)\."),
            clip_width=clip_width,
            clip_intermediate_size=shape(clip + "encoder.layers.0.mlp.fc1.weight")[0],
            clip_layers=count(re.escape(clip) + r"encoder\.layers\.(\d+)\."),
            clip_patch_size=clip_patch,
            clip_image_size=math.isqrt(clip_positions - 1) * clip_patch,
            dinov2_width=dinov2_width,
            dinov2_layers=count(re.escape(dinov2) + r"blocks\.(\d+)\."),
            dinov2_mlp_ratio=shape(dinov2 + "blocks.0.mlp.fc1.weight")[0] // dinov2_width,
            dinov2_patch_size=dinov2_patch,
            fusion_dim=shape("model.lisa_dino_conv.weight")[0],
            fusion_depth=count(r"model\.lisa_attention_layers\.(\d+)\."),
            fusion_mlp_dim=shape("model.lisa_attention_layers.0.mlp.lin1.weight")[0],
            iop_hidden=shape("model.lisa_iou_head.0.weight")[0],
            embedding_hidden=shape("model.lisa_embedding_head.0.weight")[0],
        )


def llava_config(arch: ReleaseArchitecture, tokenizer: Any, dtype: str) -> Any:
    """LLaVA with the release's LLaMA, CLIP (second-to-last layer, CLS dropped) and identity-padded projector."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    text = LlamaConfig(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=max(arch.hidden_size // LLAMA_HEAD_DIM, 1),
        num_key_value_heads=max(arch.hidden_size // LLAMA_HEAD_DIM, 1),
        rms_norm_eps=1e-6,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=arch.clip_width,
        intermediate_size=arch.clip_intermediate_size,
        num_hidden_layers=arch.clip_layers,
        num_attention_heads=max(arch.clip_width // VIT_HEAD_DIM, 1),
        image_size=arch.clip_image_size,
        patch_size=arch.clip_patch_size,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<im_patch>"),
        projector_hidden_act="linear",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(arch.clip_image_size // arch.clip_patch_size) ** 2,
        tie_word_embeddings=False,
    )
    config.dtype = dtype
    return config


def dinov2_config(arch: ReleaseArchitecture, dtype: str) -> Any:
    """DINOv2 ViT-L/14 at the release's 896 px, so the stored 64x64 grid needs no interpolation."""
    from transformers import Dinov2Config

    config = Dinov2Config(
        hidden_size=arch.dinov2_width,
        num_hidden_layers=arch.dinov2_layers,
        num_attention_heads=max(arch.dinov2_width // VIT_HEAD_DIM, 1),
        mlp_ratio=arch.dinov2_mlp_ratio,
        patch_size=arch.dinov2_patch_size,
        image_size=DINOV2_IMAGE_SIZE,
        layerscale_value=1.0,
        layer_norm_eps=1e-6,
    )
    config.dtype = dtype
    return config


def official_config(
    arch: ReleaseArchitecture, *, llava: str, dinov2: str, sam_checkpoint: str, dtype: str
) -> LLMSegConfig:
    """The release's choices: SAM's 50 largest masks pooled at 256 px, the hand-built llava_v1 prompt,
    the state before ``[SEG]`` as query, DINOv2 at 896 px with the release's position grid, union of IoP > 0.5.
    """
    return LLMSegConfig(
        name="llmseg-official",
        proposals=ProposalConfig(
            kind="sam",
            sam_checkpoint=sam_checkpoint,
            sam_model_type="vit_h",
            max_proposals=50,
            rank_by="area",
            pool_size=256,
        ),
        region_encoder=RegionEncoderConfig(
            dinov2=dinov2,
            image_size=DINOV2_IMAGE_SIZE,
            out_dim=arch.fusion_dim,
            feature_size=256,
            position_interpolation="official",
        ),
        vlm=VLMConfig(
            llava=llava,
            seg_token=EXTRA_TOKENS[3],
            prompt_style="official",
            query_position="before_seg",
            dtype=dtype,
        ),
        selector=SelectorConfig(
            dim=arch.fusion_dim,
            depth=arch.fusion_depth,
            num_heads=FUSION_HEADS,
            mlp_dim=arch.fusion_mlp_dim,
            iop_hidden=arch.iop_hidden,
            embedding_hidden=arch.embedding_hidden,
            query_tokens="seg",
        ),
        selection=SelectionConfig(rule="threshold", iop_threshold=0.5, fallback="empty"),
    )


def build_processor(base_tokenizer: str, arch: ReleaseArchitecture) -> Any:
    """The base LLaMA tokenizer plus the release's four tokens (ids ``vocab - 4`` to ``vocab - 1``), CLIP preprocessing.

    The LLaVA-Lightning tokenizer already has the three image tokens; plain LLaMA's gets them here.
    ``CLIPImageProcessor``'s defaults are ``openai/clip-vit-large-patch14``'s preprocessing.
    """
    from transformers import AddedToken, AutoTokenizer, CLIPImageProcessor, LlavaProcessor

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_tokenizer)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"cannot load the base tokenizer {base_tokenizer!r} ({str(error).splitlines()[0]}): pass the folder or "
            "Hub id of the LLaMA-7B tokenizer the release was trained with"
        ) from None
    missing = [token for token in EXTRA_TOKENS if token not in tokenizer.get_vocab()]
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in missing], special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(EXTRA_TOKENS))
    expected = list(range(arch.vocab_size - len(EXTRA_TOKENS), arch.vocab_size))
    if ids != expected or len(tokenizer) != arch.vocab_size:
        raise ValueError(
            f"with the base tokenizer {base_tokenizer!r}, {', '.join(EXTRA_TOKENS)} get ids {ids} in a vocabulary of "
            f"{len(tokenizer)}, but the checkpoint's embedding has {arch.vocab_size} rows and expects ids {expected}: "
            "pass the LLaMA-7B tokenizer the release was trained with"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token  # the release pads with <unk>
    side = arch.clip_image_size
    image_processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=arch.clip_patch_size,
        vision_feature_select_strategy="default",
        image_token=EXTRA_TOKENS[0],
        num_additional_image_tokens=1,  # CLIP's CLS token, which "default" drops again
    )


# -- checking the plan against the models it must load into ----------------------------------


def check_part(plan_part: Mapping[str, Output], expected: Mapping[str, torch.Tensor], what: str) -> None:
    """Every tensor ``expected`` (a meta-device model's state dict) has must come from the plan, same shape, and
    the plan must produce nothing it lacks."""
    extra = sorted(set(plan_part) - set(expected))
    if extra:
        sources = plan_part[extra[0]].sources
        raise ValueError(
            f"{sources[0] if sources else extra[0]!r} maps to {what} parameter {extra[0]!r}, "
            f"which the {what} model does not have"
        )
    missing = sorted(set(expected) - set(plan_part))
    if missing:
        raise ValueError(f"the checkpoint has nothing for {len(missing)} {what} parameter(s), e.g. {missing[0]!r}")
    for name, tensor in expected.items():
        if tuple(tensor.shape) != plan_part[name].shape:
            raise ValueError(
                f"{plan_part[name].sources} gives {what} parameter {name!r} the shape "
                f"{plan_part[name].shape}, but the model needs {tuple(tensor.shape)}"
            )


def saved_names(model: Any) -> dict[str, str]:
    """runtime state-dict name -> the name transformers' ``save_pretrained`` writes to disk for ``model``,
    in the order it writes them (which decides what goes into which shard)."""
    from transformers.core_model_loading import revert_weight_conversion

    expected = model.state_dict()
    reverted = revert_weight_conversion(model, dict(expected))
    by_identity = {id(tensor): name for name, tensor in expected.items()}
    names = {by_identity.get(id(tensor)): saved for saved, tensor in reverted.items()}
    if len(reverted) != len(expected) or set(names) != set(expected):
        raise ValueError(
            f"this transformers version transforms {type(model).__name__} weights on save; "
            "install the pinned transformers"
        )
    return names


def adapter_outputs(
    plan: ConversionPlan, config: LLMSegConfig, processor: Any, llava_model: torch.nn.Module
) -> dict[str, Output]:
    """The peft adapter ``LLMSeg.from_pretrained`` loads on top of ``llava/``: only the trainable ``[SEG]`` rows.

    The release's LoRA is merged into ``llava/``, so nothing is trained on top of it yet: the LoRA
    factors are left out (loading keeps peft's fresh ones, whose B = 0 adds nothing) and the
    token rows are the checkpoint's own. ``llava_model`` (meta device) is wrapped in place.
    """
    from peft import get_peft_model_state_dict

    from llmseg.model.vlm import VLM

    with torch.device("meta"):
        vlm = VLM(config.vlm, model=llava_model, processor=processor)
    outputs = {}
    for key, tensor in get_peft_model_state_dict(vlm.model).items():
        if ".lora_" in key:
            continue
        stem = key.removeprefix("base_model.model.").removesuffix(".token_adapter.trainable_tokens_delta")
        rows = plan.parts["llava"].get(stem + ".weight")
        if rows is None or tuple(tensor.shape) != (1, rows.shape[1]):
            raise ValueError(f"the VLM's LoRA settings ask for an adapter entry {key!r} the release cannot fill")

        def make(rows: Output = rows) -> torch.Tensor:
            return rows.make()[[vlm.seg_token_id]]

        outputs[key] = Output(tuple(tensor.shape), rows.sources, make, "the [SEG] row, trained as a token")
    return outputs


def _meta_models(arch: ReleaseArchitecture, llava: Any, dinov2: Any) -> dict[str, torch.nn.Module]:
    """The four modules the output is loaded into, built without memory on the meta device."""
    from transformers import Dinov2Model, LlavaForConditionalGeneration

    from llmseg.model.region_encoder import RegionEncoder
    from llmseg.model.selector import Selector

    with torch.device("meta"):
        llava_model = LlavaForConditionalGeneration(llava)
        dinov2_model = Dinov2Model(dinov2)
        config = official_config(arch, llava="", dinov2="", sam_checkpoint="", dtype="float32")
        selector = Selector(config.selector, hidden_size=arch.hidden_size)
        region_encoder = RegionEncoder(config.region_encoder, backbone=dinov2_model)
    return {"llava": llava_model, "dinov2": dinov2_model, "selector": selector, "region_encoder": region_encoder}


# -- writing ---------------------------------------------------------------------------------


def _materialise(output: Output, dtype: torch.dtype, name: str) -> torch.Tensor:
    tensor = output.make().to(dtype).contiguous()
    if dtype == torch.float16 and not torch.isfinite(tensor).all():
        raise ValueError(f"{name} has values float16 cannot hold: convert with --dtype bfloat16 or float32")
    return tensor


def write_safetensors(
    path: Path,
    outputs: Mapping[str, Output],
    *,
    dtype: torch.dtype,
    release: Callable[[Iterable[str]], None] = lambda keys: None,
    progress: tqdm | None = None,
) -> None:
    """``outputs`` as one safetensors file, byte for byte what ``safetensors.torch.save_file`` writes.

    Unlike save_file, which takes every tensor of the file at once, tensors are made, written
    and let go one at a time, ``release`` getting each one's source keys: a shard never has to
    be resident as a whole, so memory does not grow with the shard size.
    """
    names = sorted(outputs)  # save_file's data order for tensors of one dtype
    itemsize = torch.empty((), dtype=dtype).element_size()
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        size = math.prod(outputs[name].shape) * itemsize
        entry = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(outputs[name].shape)}
        header[name] = {**entry, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded)
        for name in names:
            tensor = _materialise(outputs[name], dtype, name)
            file.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
            if progress is not None:
                progress.update(tensor.nbytes)
            del tensor
            release(outputs[name].sources)


def write_shards(
    directory: Path,
    outputs: Mapping[str, Output],
    *,
    dtype: torch.dtype,
    max_shard_size: int,
    release: Callable[[Iterable[str]], None],
    description: str,
) -> None:
    """Write ``outputs`` (keyed by on-disk name) as ``model.safetensors`` or shards + index, as save_pretrained does.

    Shards are cut by huggingface_hub's splitter (save_pretrained's) from meta placeholders.
    """
    from huggingface_hub import split_torch_state_dict_into_shards

    placeholders = {name: torch.empty(output.shape, dtype=dtype, device="meta") for name, output in outputs.items()}
    split = split_torch_state_dict_into_shards(
        placeholders, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
    )
    with tqdm(total=split.metadata["total_size"], unit="B", unit_scale=True, desc=description) as progress:
        for filename, names in split.filename_to_tensors.items():
            shard = {name: outputs[name] for name in names}
            write_safetensors(directory / filename, shard, dtype=dtype, release=release, progress=progress)
    if split.is_sharded:
        total = sum(math.prod(output.shape) for output in outputs.values())
        index = {"metadata": {"total_parameters": total, **split.metadata}, "weight_map": split.tensor_to_filename}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


# -- the whole conversion --------------------------------------------------------------------


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
    models = _meta_models(arch, llava, dinov2)
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


# -- command line ----------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``convert-official`` to ``python -m llmseg``."""
    parser = subparsers.add_parser(
        "convert-official",
        help="convert the authors' released DeepSpeed checkpoint into a model folder",
        description=(
            "Convert the LLM-Seg release (JCdesu/LLM-Seg-deepspeed and siblings) into a folder that "
            "LLMSeg.from_pretrained loads. The model-states file is read memory-mapped and streamed, so it needs "
            "far less RAM than its 31 GB. If the file pickles more than tensors it is unpickled in full, which runs "
            "code from it: convert only files from the authors' release (a trusted source)."
        ),
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="Hub id, repository folder, ckpt_model or global_step folder, or the .pt file",
    )
    parser.add_argument(
        "--step",
        type=int,
        default=None,
        help="which global_step<N> to convert (default: the only one, else the latest)",
    )
    parser.add_argument(
        "--base-tokenizer",
        required=True,
        help="folder or Hub id of the LLaMA-7B tokenizer the release was trained with",
    )
    parser.add_argument("--sam-checkpoint", required=True, help="path of sam_vit_h_4b8939.pth (the proposals' SAM)")
    parser.add_argument("--out", required=True, help="new folder for the converted model")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="weights' precision on disk")
    parser.add_argument(
        "--max-shard-size",
        default=DEFAULT_MAX_SHARD_SIZE,
        help="largest safetensors shard of llava/ and dinov2/ (default %(default)s)",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    report = convert_official(
        args.checkpoint,
        base_tokenizer=args.base_tokenizer,
        sam_checkpoint=args.sam_checkpoint,
        out=args.out,
        step=args.step,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
    )
    counts = report["counts"]
    print(
        f"converted {counts['source_keys']} keys ({counts['mapped']} mapped, {counts['dropped']} dropped) "
        f"into {Path(args.out).resolve()}; details in {REPORT_FILE}"
    )
    return 0
