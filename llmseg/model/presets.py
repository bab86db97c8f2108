"""Named model configurations: ``tiny`` (tests), ``shapes`` (the embedded demo), ``llmseg-7b`` (the release).

A preset is a config plus, where one exists, a checkpoint folder shipped inside the package.
``get_preset(name)`` returns a fresh ``LLMSegConfig`` (edit it freely); ``LLMSeg.from_pretrained``
resolves preset names through ``PRESETS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmseg.model.config import (
    LLMSegConfig,
    LossConfig,
    ProposalConfig,
    RegionEncoderConfig,
    SelectionConfig,
    SelectorConfig,
    VLMConfig,
)

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"

# Default place the llmseg-7b preset looks for SAM ViT-H (relative to the working directory).
SAM_VIT_H_CHECKPOINT = "checkpoints/sam_vit_h_4b8939.pth"

# Words of the ``tiny`` preset's tokenizer: enough for the prompt templates and simple scenes.
TINY_VOCABULARY = (
    "a an the this that is are of in on to and or with which what where segment image mask",
    "red green blue yellow orange purple circle square triangle left right above below large small",
)


@dataclass(frozen=True)
class Preset:
    """A named configuration.

    ``weights``: the checkpoint folder the preset loads (``None`` when the preset has none).
    ``random_weights_ok``: whether ``from_pretrained`` may build the preset with untrained heads
    (true only for ``tiny``, whose purpose is to be small and random).
    ``how_to_get_weights``: what to run when ``weights`` is missing.
    """

    description: str
    build_config: Callable[[], LLMSegConfig]
    weights: Path | None = None
    random_weights_ok: bool = False
    how_to_get_weights: str = "train them with `python -m llmseg train`, or use the `tiny` preset"


def tiny_llava_config(*, image_size: int, vision_width: int, text_width: int, layers: int = 2) -> dict[str, Any]:
    """A LLaVA config of CLIP + Llama blocks small enough to train on a laptop CPU.

    ``text_config.vocab_size`` and ``image_token_index`` are filled in from the tokenizer when
    the model is built.
    """
    return {
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": vision_width,
            "intermediate_size": 2 * vision_width,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": 8,
            "projection_dim": vision_width,
        },
        "text_config": {
            "model_type": "llama",
            "hidden_size": text_width,
            "intermediate_size": 2 * text_width,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 512,
            "tie_word_embeddings": False,
        },
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "tie_word_embeddings": False,
    }


def tiny_dinov2_config(*, image_size: int, width: int, layers: int = 2) -> dict[str, Any]:
    """A ``Dinov2Config`` dict with patch 8 (so a small image still gives a useful grid)."""
    return {
        "hidden_size": width,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "mlp_ratio": 2,
        "image_size": image_size,
        "patch_size": 8,
    }


def tiny() -> LLMSegConfig:
    """Random weights, about 0.3M parameters, the release's choices (LoRA, frozen backbones): for tests."""
    return LLMSegConfig(
        name="tiny",
        proposals=ProposalConfig(kind="color", max_proposals=16, max_side=256, pool_size=32, min_region_area=4),
        region_encoder=RegionEncoderConfig(
            dinov2=None,
            dinov2_config=tiny_dinov2_config(image_size=64, width=32),
            image_size=64,
            out_dim=32,
            feature_size=32,
        ),
        vlm=VLMConfig(
            llava=None,
            llava_config=tiny_llava_config(image_size=32, vision_width=32, text_width=64),
            dtype="float32",
            lora_r=4,
            lora_alpha=8,
            lora_dropout=0.0,
            vocabulary=list(TINY_VOCABULARY),
        ),
        selector=SelectorConfig(dim=32, num_heads=4, mlp_dim=64, iop_hidden=16, embedding_hidden=64),
    )


def shapes() -> LLMSegConfig:
    """Small models trained from scratch for the synthetic ``shapes`` world, with the fixes it needs.

    Not the release: every query token feeds the fusion (with its position), the similarity query
    is the mean query-token state, proposals attend to each other through their relative geometry,
    pooled features keep position (2-D encoding), shape (mask-crop embedding), colour (the image's
    RGB added to the map) and extent (box and area embedding), an existence head decides "no
    target", the rule is top-1 by similarity union IoP > 0.9, and an anchor head finds the object
    a relation names so every proposal sees where it is (trained with the anchor loss: train it
    with ``--anchors``; ``llmseg/configs/shapes-first-edition.json`` is the config without it).
    See the README's *Training*.
    """
    from llmseg.data.shapes import vocabulary  # only this preset needs the synthetic world's words

    return LLMSegConfig(
        name="shapes",
        proposals=ProposalConfig(kind="color", max_proposals=32, max_side=384, pool_size=64),
        region_encoder=RegionEncoderConfig(
            dinov2=None,
            dinov2_config=tiny_dinov2_config(image_size=128, width=64),
            image_size=128,
            out_dim=64,
            feature_size=64,
            trainable_backbone=True,
            positional_encoding=True,
            shape_embedding_size=16,
            color_features=True,
            box_embedding=True,
        ),
        vlm=VLMConfig(
            llava=None,
            llava_config=tiny_llava_config(image_size=64, vision_width=64, text_width=128),
            dtype="float32",
            finetune="full",
            lora_dropout=0.0,
            vocabulary=vocabulary(),
            word_embedding_std=1.0,
        ),
        selector=SelectorConfig(
            dim=64,
            num_heads=4,
            mlp_dim=256,
            iop_hidden=64,
            embedding_hidden=256,
            depth=4,
            query_tokens="all",
            key_positions=64,
            similarity_query="tokens",
            pairwise_geometry=True,
            existence_head=True,
            anchor_geometry=True,
            anchor_after=2,
        ),
        losses=LossConfig(anchor_weight=1.0),
        selection=SelectionConfig(rule="top1_or_threshold", iop_threshold=0.9, existence_gate=True),
    )


def llmseg_7b() -> LLMSegConfig:
    """The release's architecture on today's checkpoints: SAM ViT-H, LLaVA-1.5-7B, DINOv2-L, bf16.

    Proposals follow the release (the 50 largest); the selection heads are untrained until a
    converted or trained checkpoint is loaded over them.
    """
    return LLMSegConfig(
        name="llmseg-7b",
        proposals=ProposalConfig(
            kind="sam", sam_checkpoint=SAM_VIT_H_CHECKPOINT, sam_model_type="vit_h", rank_by="area"
        ),
        region_encoder=RegionEncoderConfig(dinov2="facebook/dinov2-large", position_interpolation="official"),
        vlm=VLMConfig(llava="llava-hf/llava-1.5-7b-hf", dtype="bfloat16"),
    )


# Where `python -m llmseg convert-official --out ...` is expected to write the released weights.
OFFICIAL_CHECKPOINT_DIR = Path("checkpoints/llmseg-official")


def llmseg_official() -> LLMSegConfig:
    """The authors' released weights, converted: the release's prompt ids, ``[SEG]`` token and
    query position on top of the ``llmseg-7b`` choices. The converter writes the same config."""
    config = llmseg_7b()
    config.name = "llmseg-official"
    config.region_encoder.dinov2 = str(OFFICIAL_CHECKPOINT_DIR / "dinov2")
    config.vlm.llava = str(OFFICIAL_CHECKPOINT_DIR / "llava")
    config.vlm.seg_token = "[SEG]"
    config.vlm.prompt_style = "official"
    config.vlm.query_position = "before_seg"
    return config


PRESETS: dict[str, Preset] = {
    "tiny": Preset("random ~0.3M-parameter model for tests", tiny, random_weights_ok=True),
    "shapes": Preset("small model trained on the synthetic shapes world", shapes, weights=PRESETS_DIR / "shapes"),
    "llmseg-7b": Preset("SAM ViT-H + LLaVA-1.5-7B + DINOv2-L, the release's architecture", llmseg_7b),
    "llmseg-official": Preset(
        "the authors' released weights, converted from their DeepSpeed checkpoint",
        llmseg_official,
        weights=OFFICIAL_CHECKPOINT_DIR,
        how_to_get_weights=(
            "download a released checkpoint and run `python -m llmseg convert-official ... "
            f"--out {OFFICIAL_CHECKPOINT_DIR}` (see the README)"
        ),
    ),
}


def get_preset(name: str) -> LLMSegConfig:
    """A fresh config of preset ``name``; unknown names are a ValueError listing the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].build_config()
