"""The models the output is loaded into (built on the meta device), and the plan checked against them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from llmseg.model.config import LLMSegConfig
from llmseg.model.convert_official.configs import ReleaseArchitecture, official_config
from llmseg.model.convert_official.plan import ConversionPlan, Output


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


def meta_models(arch: ReleaseArchitecture, llava: Any, dinov2: Any) -> dict[str, torch.nn.Module]:
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
