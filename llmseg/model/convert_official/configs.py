"""The release's sizes (read from its tensor shapes) and the configs and processor built from them."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from llmseg.model.config import (
    LLMSegConfig,
    ProposalConfig,
    RegionEncoderConfig,
    SelectionConfig,
    SelectorConfig,
    VLMConfig,
)
from llmseg.model.convert_official.plan import SOURCE_PREFIX

# Tokens the release appended to LLaMA's 32000, in id order.
EXTRA_TOKENS = ("<im_patch>", "<im_start>", "<im_end>", "[SEG]")
# Widths the checkpoint cannot reveal: LLaMA's head size, ViT-L's head size (CLIP and DINOv2), fusion heads.
LLAMA_HEAD_DIM, VIT_HEAD_DIM, FUSION_HEADS = 128, 64, 8
# The release's DINOv2 input side (64 x 64 patches of 14 px).
DINOV2_IMAGE_SIZE = 896


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
