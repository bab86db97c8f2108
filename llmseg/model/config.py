"""Every size and choice of an LLM-Seg model, as typed dataclasses saved to ``config.json``.

One ``LLMSegConfig`` nests one sub-config per stage of the data flow
(proposals -> region encoder -> VLM -> selector -> selection rule), plus the loss weights.
Official LLM-Seg values are the defaults; the options that deviate from the release say so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

CONFIG_NAME = "config.json"


@dataclass
class ProposalConfig:
    """Where candidate masks come from.

    ``kind="sam"``: segment-anything "everything" mode (official settings); ``kind="color"``: the
    weight-free generator for the synthetic ``shapes`` world (colour connected components).
    """

    kind: Literal["sam", "color"] = "sam"
    sam_checkpoint: str | None = None
    sam_model_type: Literal["vit_h", "vit_l", "vit_b"] = "vit_h"
    max_proposals: int = 50
    # "score": top K by SAM's predicted IoU after NMS (keeps small targets); "area": the release's
    # "K largest" rule.
    rank_by: Literal["score", "area"] = "score"
    points_per_side: int = 32
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    max_side: int = 1024
    # Mask side used for pooling region features (the release: 256x256, padded square).
    pool_size: int = 256
    # kind="color" only: a pixel farther than this (Euclidean RGB distance) from every palette
    # colour is background; regions smaller than min_region_area pixels are dropped.
    color_tolerance: float = 60.0
    min_region_area: int = 16


@dataclass
class RegionEncoderConfig:
    """DINOv2 patch features -> 1x1 conv -> upsample -> mask pooling per proposal."""

    # Hub id or local path of a pretrained ``Dinov2Model``; None builds one from ``dinov2_config``.
    dinov2: str | None = "facebook/dinov2-large"
    dinov2_config: dict[str, Any] | None = None
    image_size: int = 896  # the padded square input side
    out_dim: int = 256  # fusion width (the 1x1 conv's output channels)
    feature_size: int = 256  # side of the upsampled feature map that masks pool over
    trainable_backbone: bool = False
    # "transformers": interpolate DINOv2's position grid at run time; "official": the release's
    # bicubic (64 + 0.1) / 37 scale-factor grid, precomputed once.
    position_interpolation: Literal["transformers", "official"] = "transformers"
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    # Not in the release: add a 2-D sinusoidal position encoding to the map before pooling, so
    # pooled features keep where a region is (needed for "left of"/"above" questions).
    positional_encoding: bool = False
    # Not in the release: side of the proposal-mask crop embedded by an MLP (0 = off); pooling
    # washes shape out, this keeps it.
    shape_embedding_size: int = 0
    # Not in the release: a 1x1 conv of the image's own RGB added to the feature map, so a region's
    # colour survives pooling exactly even when the backbone is small and trained from scratch.
    color_features: bool = False
    # Not in the release: the proposal's box and area (fractions of the padded square) embedded by
    # an MLP and added to its pooled feature, so size and extent are explicit ("the largest ...").
    box_embedding: bool = False


@dataclass
class VLMConfig:
    """The LLaVA model that reads the image and the question and emits ``<SEG>``."""

    # Hub id or local path of a ``LlavaForConditionalGeneration``; None builds one from ``llava_config``.
    llava: str | None = "llava-hf/llava-1.5-7b-hf"
    llava_config: dict[str, Any] | None = None
    # Processor/tokenizer path; None = the same as ``llava``.
    processor: str | None = None
    seg_token: str = "<SEG>"
    # "chat_template": the processor's chat template; "official": the release's hand-built ids
    # (llava_v1 conversation, <im_start>/<im_end> around 256 image tokens).
    prompt_style: Literal["chat_template", "official"] = "chat_template"
    short_query_template: str = "What is {query} in this image? Please output segmentation mask."
    long_query_template: str = "{query} Please output segmentation mask."
    # "before_seg": the last-layer state that predicts <SEG> (the release); "seg": the state at <SEG>.
    query_position: Literal["before_seg", "seg"] = "before_seg"
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    quantization: Literal["none", "8bit", "4bit"] = "none"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    # Regex on module names: LoRA on the language model only (the vision tower has q_proj/v_proj too).
    lora_target_modules: str = r".*language_model.*\.(q_proj|v_proj)"
    train_seg_embedding: bool = True
    ce_on_answer: bool = True
    # "lora": LoRA on the language model + the <SEG> rows, the rest frozen (the release);
    # "full": every VLM weight trains (small models built from ``llava_config`` and trained from scratch).
    finetune: Literal["lora", "full"] = "lora"
    # Words (or texts, split into words) of the word-level tokenizer built when neither ``llava`` nor
    # ``processor`` names one (tiny models need no download); prompt-template words are added automatically.
    vocabulary: list[str] | None = None
    # For a LLaVA built from ``llava_config`` (trained from scratch): the std of its word embeddings.
    # transformers initialises them like every weight (std 0.02), so at a text position the 64+
    # image tokens mixed in by attention drown the word itself and the query cannot be read; 1.0
    # (nn.Embedding's default) keeps each word visible. None keeps transformers' initialisation.
    word_embedding_std: float | None = None


@dataclass
class SelectorConfig:
    """The selection module: <SEG> projection MLP, two-way fusion blocks, IoP and IoU heads."""

    dim: int = 256
    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    iop_hidden: int = 128
    embedding_hidden: int = 2048
    # "seg": one text token, as released; "all": every query token's state is a key of the
    # proposals->text attention (not in the release; fixes the constant single-key softmax).
    query_tokens: Literal["seg", "all"] = "seg"
    # Not in the release: a learned embedding of each key's position (0 = <SEG>, 1.. = the query's
    # tokens, up to this many keys) added before fusion, so the proposals see word order; RoPE
    # keeps positions out of the LLM's states. 0 turns it off.
    key_positions: int = 0
    # Not in the release: proposal self-attention sees each pair's relative geometry (offset,
    # distance, size ratio from the masks' boxes) as a per-head logit bias and as a value term, so
    # "nearest to", "left of" and "largest" compare proposals directly instead of via absolute features.
    pairwise_geometry: bool = False
    # What the proposals' embeddings are compared with (cosine) for the alignment score: "seg", the
    # projected <SEG> state (the release), or "tokens", the mean of the query's projected token
    # states. A small LLM trained from scratch keeps its <SEG> state nearly question-independent,
    # which leaves the similarity a constant direction; "tokens" makes it a word-to-proposal match.
    similarity_query: Literal["seg", "tokens"] = "seg"
    # Not in the release: a residual MLP on each proposal's features before the first fusion block.
    # Pooled features are sums of linear embeddings (colour, box, ...); the first proposal->text
    # attention would otherwise score them linearly, and "orange" (between red and yellow) is not
    # a half-space of RGB.
    input_mlp: bool = False
    # Not in the release: a head on the fused query that says whether any target exists.
    existence_head: bool = False
    # Not in the release: after ``anchor_after`` fusion blocks a head scores which proposal is the
    # question's anchor ("the square left of *the circle*"), and every proposal then receives its
    # geometry relative to that soft anchor. Trained by the anchor loss (``losses.anchor_weight``)
    # on anchor masks from the scene graph; needs ``pairwise_geometry``.
    anchor_geometry: bool = False
    anchor_after: int = 2
    dropout: float = 0.0


@dataclass
class LossConfig:
    """Loss weights and the alignment temperature of the release."""

    ce_weight: float = 1.0
    align_weight: float = 1.0
    iop_weight: float = 1.0
    existence_weight: float = 1.0
    align_temperature: float = 0.05
    # Not in the release: cross-entropy of the selector's anchor head against the proposals that
    # cover the question's anchor object (0 leaves the head to the other losses alone).
    anchor_weight: float = 0.0


@dataclass
class SelectionConfig:
    """How predicted scores become one mask.

    rules: "threshold" (union of IoP > iop_threshold; the release), "top1" (best similarity),
    "top1_or_threshold" (top-1 by similarity union IoP > iop_threshold),
    "threshold_in_topk" (IoP > iop_threshold among the top_k by similarity).
    fallback when the rule selects nothing: "empty" (the release), "top1", or "existence"
    (top-1 only when the existence head says a target exists).
    """

    rule: Literal["threshold", "top1", "top1_or_threshold", "threshold_in_topk"] = "threshold"
    iop_threshold: float = 0.5
    top_k: int = 5
    fallback: Literal["empty", "top1", "existence"] = "empty"
    existence_threshold: float = 0.5
    # Not in the release: when True, an existence probability below existence_threshold gives an
    # empty mask whatever the rule selected ("no target" decided by the existence head).
    existence_gate: bool = False


@dataclass
class LLMSegConfig:
    """The whole model. ``save_pretrained``/``from_pretrained`` round-trip it through JSON."""

    name: str = "llmseg"
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    region_encoder: RegionEncoderConfig = field(default_factory=RegionEncoderConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LLMSegConfig:
        """Build from a dict, rejecting unknown keys and wrong types with a sentence naming them."""
        return _from_dict(cls, data, "config")

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        target = path / CONFIG_NAME
        target.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return target

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> LLMSegConfig:
        path = Path(directory)
        file = path / CONFIG_NAME if path.is_dir() else path
        if not file.is_file():
            raise ValueError(f"no {CONFIG_NAME} in {directory}: is this an llmseg model folder?")
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{file} is not valid JSON: {error}") from None
        return cls.from_dict(data)


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value, f"{where}.{name}")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _check_literal(obj: Any, where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ValueError(f"{where}.{f.name} is {value!r}; choose one of {choices}")


def _validate(config: LLMSegConfig) -> None:
    for name in ("proposals", "region_encoder", "vlm", "selector", "losses", "selection"):
        _check_literal(getattr(config, name), name)
    if config.vlm.llava is None and config.vlm.llava_config is None:
        raise ValueError("vlm.llava and vlm.llava_config are both unset: name a LLaVA checkpoint or give a config")
    if config.vlm.llava is None and config.vlm.processor is None and not config.vlm.vocabulary:
        raise ValueError("a VLM built from vlm.llava_config needs vlm.processor or a vlm.vocabulary for its tokenizer")
    if config.proposals.kind == "sam" and config.proposals.max_proposals < 1:
        raise ValueError("proposals.max_proposals must be at least 1")
    if config.selector.dim % config.selector.num_heads:
        raise ValueError("selector.dim must be divisible by selector.num_heads")
    if config.region_encoder.out_dim != config.selector.dim:
        raise ValueError("region_encoder.out_dim must equal selector.dim (proposal features feed the selector)")
    if config.selection.fallback == "existence" and not config.selector.existence_head:
        raise ValueError('selection.fallback="existence" needs selector.existence_head=True')
    if config.selection.existence_gate and not config.selector.existence_head:
        raise ValueError("selection.existence_gate=True needs selector.existence_head=True")
    if config.vlm.word_embedding_std is not None and config.vlm.word_embedding_std <= 0:
        raise ValueError("vlm.word_embedding_std must be positive (or null for transformers' initialisation)")
    if config.proposals.color_tolerance <= 0:
        raise ValueError("proposals.color_tolerance must be positive")
    if config.proposals.min_region_area < 1:
        raise ValueError("proposals.min_region_area must be at least 1")
    if not 0.0 <= config.selection.iop_threshold <= 1.0:
        raise ValueError("selection.iop_threshold must lie in [0, 1]")
    selector = config.selector
    if selector.anchor_geometry and not selector.pairwise_geometry:
        raise ValueError("selector.anchor_geometry=True needs selector.pairwise_geometry=True")
    if selector.anchor_geometry and not 1 <= selector.anchor_after < selector.depth:
        raise ValueError(
            f"selector.anchor_after must lie in [1, {selector.depth - 1}]: a fusion block must read the query "
            "before the anchor head, and one must follow it"
        )
    if config.losses.anchor_weight < 0 or (config.losses.anchor_weight > 0 and not selector.anchor_geometry):
        raise ValueError("losses.anchor_weight must be zero or more, and above zero only with selector.anchor_geometry")
