"""The key mapping: where every source tensor of the release goes, or why it is dropped."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

SOURCE_PREFIX = "base_model.model."
# The release's LoRA: alpha 16 (the rank, 8, is read from the factors' shapes).
RELEASE_LORA_ALPHA = 16


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
