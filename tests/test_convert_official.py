"""The release converter on a miniature of the authors' DeepSpeed checkpoint.

The miniature is written here from official-checkpoint.md alone (key names, nesting, the
``{"module": ...}`` form, bf16 values), at tiny widths and depths; every expectation below is
derived from that document, not from the converter's code.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import Dinov2Model, LlavaForConditionalGeneration, PreTrainedTokenizerFast

from llmseg.model import convert_official
from llmseg.model.config import LLMSegConfig
from llmseg.model.convert_official import REPORT_FILE
from llmseg.model.convert_official import convert_official as convert

P = "base_model.model."
SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions. USER:"
)
LONG_QUERY = "Which object would you use to sit on while reading?"
SHORT_QUERY = "the red chair"
WORDS = f"{SYSTEM} {LONG_QUERY} What is {SHORT_QUERY} in this image? Please output segmentation mask. ASSISTANT: ."


def tiny_sizes(**overrides: int) -> dict[str, int]:
    """Release structure at toy widths; ``RELEASE_7B`` holds the release's own."""
    sizes = dict(
        vocab=0,  # set from the test tokenizer: base + 4
        hidden=256,  # 2 heads of 128, as LLaMA's head size
        intermediate=64,
        layers=2,
        lora_r=8,
        clip_width=64,
        clip_intermediate=128,
        clip_layers=2,
        clip_positions=257,  # 224 px / 14 = 16 x 16 patches + CLS, as CLIP ViT-L/14-224
        dino_width=64,
        dino_layers=2,
        dino_positions=1370,  # 518 px / 14 = 37 x 37 + CLS, as torch.hub dinov2_vitl14
        fusion=16,
        fusion_mlp=32,
        iop_hidden=8,
        embedding_hidden=32,
    )
    sizes.update(overrides)
    return sizes


# The release's sizes (official-checkpoint.md), for the benchmarks that build full-width checkpoints.
RELEASE_7B = dict(
    vocab=32004,
    hidden=4096,
    intermediate=11008,
    layers=32,
    lora_r=8,
    clip_width=1024,
    clip_intermediate=4096,
    clip_layers=24,
    clip_positions=257,
    dino_width=1024,
    dino_layers=24,
    dino_positions=1370,
    fusion=256,
    fusion_mlp=2048,
    iop_hidden=128,
    embedding_hidden=2048,
)


def release_module(
    sizes: dict[str, int], seed: int = 0, std: float = 0.5, device: str = "cpu"
) -> collections.OrderedDict[str, torch.Tensor]:
    """The release's ``module`` dict (official-checkpoint.md's key groups): random bf16 CPU tensors of spread ``std``.

    device: where the random numbers are drawn (a GPU draws a 7B-sized dict in seconds).
    """
    generator = torch.Generator(device).manual_seed(seed)
    module: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()

    def add(name: str, *shape: int) -> None:
        values = torch.randn(*shape, generator=generator, device=device) * std
        module[P + name] = values.to(torch.bfloat16).cpu()

    s = sizes
    h, v = s["hidden"], s["vocab"]
    add("model.embed_tokens.weight", v, h)
    for i in range(s["layers"]):
        layer = f"model.layers.{i}."
        for proj in "qkvo":
            add(f"{layer}self_attn.{proj}_proj.weight", h, h)
        for proj in "qv":
            add(f"{layer}self_attn.{proj}_proj.lora_A.default.weight", s["lora_r"], h)
            add(f"{layer}self_attn.{proj}_proj.lora_B.default.weight", h, s["lora_r"])
        module[P + layer + "self_attn.rotary_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, 128, 2) / 128))
        add(f"{layer}mlp.gate_proj.weight", s["intermediate"], h)
        add(f"{layer}mlp.up_proj.weight", s["intermediate"], h)
        add(f"{layer}mlp.down_proj.weight", h, s["intermediate"])
        add(f"{layer}input_layernorm.weight", h)
        add(f"{layer}post_attention_layernorm.weight", h)
    add("model.norm.weight", h)
    add("lm_head.weight", v, h)

    clip, c = "model.vision_tower.vision_tower.vision_model.", s["clip_width"]
    add(clip + "embeddings.class_embedding", c)
    add(clip + "embeddings.patch_embedding.weight", c, 3, 14, 14)
    add(clip + "embeddings.position_embedding.weight", s["clip_positions"], c)
    module[P + clip + "embeddings.position_ids"] = torch.arange(s["clip_positions"])[None]
    add(clip + "pre_layrnorm.weight", c)
    add(clip + "pre_layrnorm.bias", c)
    for i in range(s["clip_layers"]):
        layer = f"{clip}encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            add(f"{layer}self_attn.{proj}.weight", c, c)
            add(f"{layer}self_attn.{proj}.bias", c)
        for norm in ("layer_norm1", "layer_norm2"):
            add(f"{layer}{norm}.weight", c)
            add(f"{layer}{norm}.bias", c)
        add(f"{layer}mlp.fc1.weight", s["clip_intermediate"], c)
        add(f"{layer}mlp.fc1.bias", s["clip_intermediate"])
        add(f"{layer}mlp.fc2.weight", c, s["clip_intermediate"])
        add(f"{layer}mlp.fc2.bias", c)
    add(clip + "post_layernorm.weight", c)
    add(clip + "post_layernorm.bias", c)
    add("model.mm_projector.weight", h, c)
    add("model.mm_projector.bias", h)

    sam = "model.visual_model."  # a few of SAM's keys: all dropped
    add(sam + "image_encoder.pos_embed", 1, 4, 4, 8)
    add(sam + "image_encoder.patch_embed.proj.weight", 8, 3, 16, 16)
    add(sam + "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", 2, 4)
    add(sam + "mask_decoder.iou_token.weight", 1, 8)

    dino, d = "model.visual_model_dinov2.", s["dino_width"]
    add(dino + "cls_token", 1, 1, d)
    add(dino + "pos_embed", 1, s["dino_positions"], d)
    add(dino + "mask_token", 1, d)
    add(dino + "patch_embed.proj.weight", d, 3, 14, 14)
    add(dino + "patch_embed.proj.bias", d)
    for i in range(s["dino_layers"]):
        block = f"{dino}blocks.{i}."
        for norm in ("norm1", "norm2"):
            add(f"{block}{norm}.weight", d)
            add(f"{block}{norm}.bias", d)
        add(f"{block}attn.qkv.weight", 3 * d, d)
        add(f"{block}attn.qkv.bias", 3 * d)
        add(f"{block}attn.proj.weight", d, d)
        add(f"{block}attn.proj.bias", d)
        add(f"{block}ls1.gamma", d)
        add(f"{block}ls2.gamma", d)
        add(f"{block}mlp.fc1.weight", 4 * d, d)
        add(f"{block}mlp.fc1.bias", 4 * d)
        add(f"{block}mlp.fc2.weight", d, 4 * d)
        add(f"{block}mlp.fc2.bias", d)
    add(dino + "norm.weight", d)
    add(dino + "norm.bias", d)

    f = s["fusion"]
    add("model.text_hidden_fcs.0.0.weight", h, h)
    add("model.text_hidden_fcs.0.0.bias", h)
    add("model.text_hidden_fcs.0.2.weight", f, h)
    add("model.text_hidden_fcs.0.2.bias", f)
    add("model.lisa_dino_conv.weight", f, d, 1, 1)
    add("model.lisa_dino_conv.bias", f)

    def attention(prefix: str) -> None:
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            add(f"{prefix}.{proj}.weight", f, f)
            add(f"{prefix}.{proj}.bias", f)

    for i in range(2):
        layer = f"model.lisa_attention_layers.{i}."
        for name in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token"):
            attention(layer + name)
        for norm in ("norm1", "norm2", "norm3", "norm4"):
            add(f"{layer}{norm}.weight", f)
            add(f"{layer}{norm}.bias", f)
        add(f"{layer}mlp.lin1.weight", s["fusion_mlp"], f)
        add(f"{layer}mlp.lin1.bias", s["fusion_mlp"])
        add(f"{layer}mlp.lin2.weight", f, s["fusion_mlp"])
        add(f"{layer}mlp.lin2.bias", f)
    attention("model.lisa_final_attn")
    add("model.lisa_norm_final_attn.weight", f)
    add("model.lisa_norm_final_attn.bias", f)
    add("model.lisa_iou_head.0.weight", s["iop_hidden"], f)
    add("model.lisa_iou_head.0.bias", s["iop_hidden"])
    add("model.lisa_iou_head.2.weight", 1, s["iop_hidden"])
    add("model.lisa_iou_head.2.bias", 1)
    add("model.lisa_embedding_head.0.weight", s["embedding_hidden"], f)
    add("model.lisa_embedding_head.0.bias", s["embedding_hidden"])
    add("model.lisa_embedding_head.2.weight", f, s["embedding_hidden"])
    add("model.lisa_embedding_head.2.bias", f)
    return module


def deepspeed_state(module: collections.OrderedDict[str, torch.Tensor], frozen_copy: bool = True) -> dict[str, object]:
    """The model-states pickle around ``module``, with a few of DeepSpeed's other top-level entries.

    frozen_copy: include DeepSpeed's flattened second copy of the frozen weights (doubles the file).
    """
    frozen = collections.OrderedDict(
        (k, t.flatten().clone()) for k, t in module.items() if frozen_copy and "lisa" not in k
    )
    return {
        "module": module,
        "buffer_names": [k for k in module if k.endswith(("inv_freq", "position_ids"))],
        "param_shapes": [collections.OrderedDict((k, t.shape) for k, t in module.items() if "lisa" in k)],
        "frozen_param_fragments": frozen,
        "sparse_tensor_module_names": set(),
        "global_steps": 5000,
        "dp_world_size": 2,
        "mp_world_size": 1,
        "ds_config": {"bf16": {"enabled": True}, "zero_optimization": {"stage": 2}},
        "ds_version": "0.10.0",
    }


def write_release(
    root: Path,
    module: collections.OrderedDict[str, torch.Tensor],
    steps: tuple[int, ...] = (5000,),
    frozen_copy: bool = True,
) -> Path:
    """``root/ckpt_model/global_step<N>/`` as the Hub repositories lay it out; returns the last model-states path."""
    ckpt = root / "ckpt_model"
    for step in steps:
        folder = ckpt / f"global_step{step}"
        folder.mkdir(parents=True)
        torch.save(deepspeed_state(module, frozen_copy), folder / "mp_rank_00_model_states.pt")
        (folder / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"optimiser shard")
    (ckpt / "latest").write_text(f"global_step{steps[-1]}")
    (ckpt / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")
    return folder / "mp_rank_00_model_states.pt"


def word_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """A sentencepiece-free LLaMA stand-in: <unk> 0, <s> 1, </s> 2, then the words the prompts use."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    splitter = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    for word, _ in splitter.pre_tokenize_str(WORDS):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = splitter
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(folder)
    return tokenizer


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(repository folder, module dict, base tokenizer folder, SAM file, converted folder)."""
    root = tmp_path_factory.mktemp("release")
    tokenizer = word_tokenizer(root / "base_tokenizer")
    module = release_module(tiny_sizes(vocab=len(tokenizer) + 4))
    write_release(root / "repo", module)
    sam = root / "sam_vit_h_4b8939.pth"
    sam.write_bytes(b"not read by the converter")
    out = root / "converted"
    convert(root / "repo", base_tokenizer=str(root / "base_tokenizer"), sam_checkpoint=sam, out=out)
    return root / "repo", module, root / "base_tokenizer", sam, out


def exact_merge(module: dict[str, torch.Tensor], base: str) -> tuple[torch.Tensor, torch.Tensor]:
    """W + 16/8 * B @ A in float64 (the spec's merge), and the magnitude of its terms |W| + 2 |B| @ |A|."""
    stem = base.removesuffix(".weight")
    weight = module[base].double()
    down, up = module[f"{stem}.lora_A.default.weight"].double(), module[f"{stem}.lora_B.default.weight"].double()
    scale = 16 / down.shape[0]
    return weight + scale * up @ down, weight.abs() + scale * up.abs() @ down.abs()


def expected_targets(key: str) -> tuple[str, str] | None:
    """(part, parameter) the spec maps ``key`` to, in this transformers version's module names; None: dropped."""
    name = key.removeprefix(P)
    if "lora_" in name or name.endswith(("inv_freq", "position_ids")) or name.startswith("model.visual_model."):
        return None
    if name == "lm_head.weight":
        return "llava", "lm_head.weight"
    for prefix, part, target in (
        ("model.vision_tower.vision_tower.vision_model.", "llava", "model.vision_tower."),
        ("model.mm_projector.", "llava", "model.multi_modal_projector.linear_1."),
        ("model.visual_model_dinov2.", "dinov2", ""),
        ("model.text_hidden_fcs.0.", "selector", "text_projection."),
        ("model.lisa_attention_layers.", "selector", "blocks."),
        ("model.lisa_final_attn.", "selector", "final_attn."),
        ("model.lisa_norm_final_attn.", "selector", "norm_final_attn."),
        ("model.lisa_iou_head.", "selector", "iop_head."),
        ("model.lisa_embedding_head.", "selector", "embedding_head."),
        ("model.lisa_dino_conv.", "region_encoder", "conv."),
        ("model.", "llava", "model.language_model."),
    ):
        if name.startswith(prefix):
            rest = name.removeprefix(prefix)
            if part == "dinov2":
                rest = (
                    rest.replace("cls_token", "embeddings.cls_token")
                    .replace("mask_token", "embeddings.mask_token")
                    .replace("patch_embed.proj", "embeddings.patch_embeddings.projection")
                    .replace("blocks.", "encoder.layer.")
                    .replace("attn.proj", "attention.o_proj")
                    .replace("ls1.gamma", "layer_scale1.lambda1")
                    .replace("ls2.gamma", "layer_scale2.lambda1")
                )
                rest = "layernorm." + rest.removeprefix("norm.") if rest.startswith("norm.") else rest
            return part, target + rest
    raise AssertionError(f"the spec does not cover {key}")


def converted_parts(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    llava = LlavaForConditionalGeneration.from_pretrained(out / "llava", dtype=torch.bfloat16)
    dinov2 = Dinov2Model.from_pretrained(out / "dinov2", dtype=torch.bfloat16)
    return {
        "llava": llava.state_dict(),
        "dinov2": dinov2.state_dict(),
        "selector": load_file(out / "selector.safetensors"),
        "region_encoder": load_file(out / "region_encoder.safetensors"),
    }


def test_every_source_tensor_lands_where_the_spec_says(release):
    _, module, _, _, out = release
    parts = converted_parts(out)
    checked = 0
    for key, tensor in module.items():
        target = expected_targets(key)
        if target is None or key.endswith(("pos_embed", "attn.qkv.weight", "attn.qkv.bias")):
            continue
        part, name = target
        converted = parts[part][name]
        if key.startswith(P + "model.layers.") and key.endswith(("q_proj.weight", "v_proj.weight")):
            expected, magnitude = exact_merge(module, key)
            # One bf16 rounding of the merge (relative error <= 2^-8) after float32 sums (tiny absolute error).
            bound = expected.abs() * 2**-8 + magnitude * 2**-20
            assert torch.all((converted.double() - expected).abs() <= bound), key
            assert not torch.equal(converted, tensor), f"{key}: LoRA not merged"
        else:
            assert torch.equal(converted, tensor), key
        checked += 1
    assert checked > 100


def test_report_accounts_for_every_key(release):
    _, module, _, _, out = release

    report = json.loads((out / REPORT_FILE).read_text())
    assert set(report["mapped"]) | set(report["dropped"]) == set(module)
    assert not set(report["mapped"]) & set(report["dropped"])
    assert all(expected_targets(key) is None and "lora_" not in key for key in report["dropped"])
    assert any("SAM" in reason for reason in report["dropped"].values())
    assert "frozen_param_fragments" in report["ignored_entries"]
    lora = P + "model.layers.1.self_attn.v_proj.lora_B.default.weight"
    assert report["mapped"][lora] == ["llava:model.language_model.layers.1.self_attn.v_proj.weight"]


def test_projector_reproduces_the_single_linear(release):
    _, module, _, _, out = release
    llava = LlavaForConditionalGeneration.from_pretrained(out / "llava", dtype=torch.bfloat16)
    features = torch.randn(2, 5, module[P + "model.mm_projector.weight"].shape[1]).to(torch.bfloat16)
    expected = F.linear(features, module[P + "model.mm_projector.weight"], module[P + "model.mm_projector.bias"])
    assert torch.equal(llava.model.multi_modal_projector(features), expected)


def test_dinov2_qkv_split_reproduces_the_fused_attention(release):
    _, module, _, _, out = release
    dinov2 = Dinov2Model.from_pretrained(out / "dinov2", dtype=torch.float32)
    block = P + "model.visual_model_dinov2.blocks.1."
    x = torch.randn(2, 7, dinov2.config.hidden_size)
    qkv = F.linear(x, module[block + "attn.qkv.weight"].float(), module[block + "attn.qkv.bias"].float())
    heads = dinov2.config.num_attention_heads
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    attended = (torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v).transpose(1, 2)
    expected = F.linear(
        attended.flatten(2), module[block + "attn.proj.weight"].float(), module[block + "attn.proj.bias"].float()
    )
    got = dinov2.encoder.layer[1].attention(x)
    got = got[0] if isinstance(got, tuple) else got
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_dinov2_position_grid_is_the_release_interpolation(release):
    _, module, _, _, out = release
    dinov2 = Dinov2Model.from_pretrained(out / "dinov2", dtype=torch.bfloat16)
    table = module[P + "model.visual_model_dinov2.pos_embed"]
    side, dim = math.isqrt(table.shape[1] - 1), table.shape[2]
    grid = table[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    scale = (896 // 14 + 0.1) / side  # torch.hub DINOv2: w0 + interpolate_offset over sqrt(N)
    grid = F.interpolate(grid, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    expected = torch.cat([table[:, :1].float(), grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)
    assert dinov2.config.image_size == 896
    assert torch.equal(dinov2.embeddings.position_embeddings, expected.to(torch.bfloat16))


def test_config_has_the_release_choices(release):
    _, module, _, sam, out = release
    config = LLMSegConfig.from_pretrained(out)
    assert (config.proposals.kind, config.proposals.rank_by, config.proposals.max_proposals) == ("sam", "area", 50)
    assert config.proposals.pool_size == 256 and config.proposals.sam_checkpoint == str(sam.resolve())
    assert (config.vlm.prompt_style, config.vlm.query_position, config.vlm.seg_token) == (
        "official",
        "before_seg",
        "[SEG]",
    )
    assert (config.region_encoder.position_interpolation, config.region_encoder.image_size) == ("official", 896)
    assert (config.selection.rule, config.selection.iop_threshold, config.selection.fallback) == (
        "threshold",
        0.5,
        "empty",
    )
    assert config.selector.dim == module[P + "model.lisa_dino_conv.weight"].shape[0]


@pytest.fixture(scope="module")
def converted_model(release):
    """The converted folder loaded through LLMSeg.from_pretrained, SAM replaced by three fixed masks."""
    from llmseg.model import llmseg as llmseg_module
    from llmseg.model.llmseg import LLMSeg
    from llmseg.model.proposals import Proposals

    def fixed_proposals(image: np.ndarray) -> Proposals:
        height, width = image.shape[:2]
        masks = np.zeros((3, height, width), bool)
        masks[0, : height // 2] = True
        masks[1, :, : width // 2] = True
        masks[2, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = True
        return Proposals(masks=masks, scores=np.ones(3, np.float32))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(llmseg_module, "build_proposal_generator", lambda config, device="cpu": fixed_proposals)
        return LLMSeg.from_pretrained(release[4])


def test_prompt_ids_follow_the_specification(release, converted_model):
    _, module, tokenizer_dir, _, _ = release
    base = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    vocab = module[P + "model.embed_tokens.weight"].shape[0]
    im_patch, im_start, im_end, seg = range(vocab - 4, vocab)

    def sp(text: str) -> list[int]:
        return base.encode(text, add_special_tokens=False)

    for query, sentence, middle in (
        (LONG_QUERY, True, f"{LONG_QUERY} Please output segmentation mask."),
        (SHORT_QUERY, False, f"What is {SHORT_QUERY} in this image? Please output segmentation mask."),
    ):
        expected = [1, *sp(SYSTEM), im_start, *[im_patch] * 256, im_end, *sp(f"{middle} ASSISTANT:"), seg]
        expected += [*sp("."), 2]  # the teacher-forced answer "[SEG].</s>"
        assert converted_model.vlm.build_official_prompt_ids(query, sentence) == expected


def test_converted_folder_loads_and_segments(converted_model):
    from llmseg.pipeline import Segmenter

    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    result = Segmenter(converted_model).segment(image, SHORT_QUERY)
    assert result.mask.shape == (60, 80) and result.iop.shape == (3,) and result.similarity.shape == (3,)
    assert np.all((result.iop >= 0) & (result.iop <= 1))
    np.testing.assert_array_equal(result.selected, result.iop > 0.5)
    expected_mask = result.proposals.masks[result.selected].any(axis=0) if result.selected.any() else 0
    np.testing.assert_array_equal(result.mask, np.broadcast_to(expected_mask, (60, 80)))


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_converting_twice_gives_identical_bytes(release, tmp_path):
    repo, _, tokenizer_dir, sam, _ = release
    out = tmp_path / "model"
    digests = []
    for _ in range(2):
        convert(repo, base_tokenizer=str(tokenizer_dir), sam_checkpoint=sam, out=out, max_shard_size="200KB")
        digests.append(folder_digest(out))
        shutil.rmtree(out)
    assert digests[0] == digests[1]
    assert sum(name.startswith("llava/model-0") for name in digests[0]) > 1  # sharded, with an index


def test_weights_are_the_bytes_save_pretrained_writes(release, tmp_path):
    repo, _, tokenizer_dir, sam, _ = release
    out = tmp_path / "model"
    convert(repo, base_tokenizer=str(tokenizer_dir), sam_checkpoint=sam, out=out, max_shard_size="200KB")
    for model_class, part in ((LlavaForConditionalGeneration, "llava"), (Dinov2Model, "dinov2")):
        model = model_class.from_pretrained(out / part, dtype=torch.bfloat16)
        model.save_pretrained(tmp_path / f"resaved-{part}", max_shard_size="200KB")
        converted, resaved = folder_digest(out / part), folder_digest(tmp_path / f"resaved-{part}")
        weights = {name for name in resaved if "safetensors" in name}
        assert len(weights) > 2 and {name: converted[name] for name in weights} == {n: resaved[n] for n in weights}


def test_an_unexpected_key_stops_the_conversion_naming_it(release, tmp_path):
    _, module, tokenizer_dir, sam, _ = release
    strange = collections.OrderedDict(module)
    strange[P + "model.lisa_extra_head.weight"] = torch.zeros(2, 2, dtype=torch.bfloat16)
    write_release(tmp_path / "repo", strange)
    with pytest.raises(ValueError, match=r"unexpected key 'base_model\.model\.model\.lisa_extra_head\.weight'"):
        convert(tmp_path / "repo", base_tokenizer=str(tokenizer_dir), sam_checkpoint=sam, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_lora_partner_is_named(release, tmp_path):
    _, module, tokenizer_dir, sam, _ = release
    broken = collections.OrderedDict(module)
    del broken[P + "model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    write_release(tmp_path / "repo", broken)
    with pytest.raises(ValueError, match=r"q_proj\.lora_A\.default\.weight.*lora_B"):
        convert(tmp_path / "repo", base_tokenizer=str(tokenizer_dir), sam_checkpoint=sam, out=tmp_path / "out")


def test_checkpoint_location_errors(release, tmp_path):
    repo, _, tokenizer_dir, sam, _ = release

    def run(checkpoint, **kwargs):
        convert(checkpoint, base_tokenizer=str(tokenizer_dir), sam_checkpoint=sam, out=tmp_path / "out", **kwargs)

    with pytest.raises(ValueError, match=r"no global_step7 in .*available steps: 5000"):
        run(repo, step=7)
    with pytest.raises(ValueError, match="no mp_rank_00_model_states.pt and no global_step"):
        run(tmp_path)
    truncated = tmp_path / "cut" / "mp_rank_00_model_states.pt"
    truncated.parent.mkdir()
    data = (repo / "ckpt_model/global_step5000/mp_rank_00_model_states.pt").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        run(truncated)
    with pytest.raises(ValueError, match="holds optimiser states"):
        run(repo / "ckpt_model/global_step5000/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    stray = tmp_path / "stray" / "global_step1"
    stray.mkdir(parents=True)
    (stray / "mp_rank_00_model_states.pt").write_bytes(b"")
    (stray / "mp_rank_01_model_states.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="unexpected file.*mp_rank_01_model_states.pt.*model-parallel"):
        run(tmp_path / "stray")
    with pytest.raises(ValueError, match="neither a file, a folder nor a Hub"):
        run(str(tmp_path / "nowhere"))


def test_several_steps_pick_the_latest_unless_told(release, tmp_path):
    module = release[1]
    write_release(tmp_path / "repo", module, steps=(100, 5000))
    located = convert_official.locate_checkpoint(str(tmp_path / "repo"))
    assert located.step == 5000 and "latest of 2" in located.note
    assert convert_official.locate_checkpoint(str(tmp_path / "repo"), step=100).path.parent.name == "global_step100"


def test_a_tokenizer_of_the_wrong_size_is_refused(release, tmp_path):
    repo, _, _, sam, _ = release
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3}
    small = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")))
    small.save_pretrained(tmp_path / "small")
    with pytest.raises(ValueError, match="embedding has .* rows"):
        convert(repo, base_tokenizer=str(tmp_path / "small"), sam_checkpoint=sam, out=tmp_path / "out")


def test_a_file_pickling_more_than_tensors_still_loads(tmp_path):
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1e-4)}, path)
    module, ignored = convert_official.load_model_states(path)
    assert torch.equal(module["w"], torch.ones(2)) and "args" in ignored


def test_command_line_converts_and_reports_errors_in_one_line(release, tmp_path, capsys):
    from llmseg import __main__ as cli

    repo, _, tokenizer_dir, sam, _ = release
    arguments = ["convert-official", "--checkpoint", str(repo), "--base-tokenizer", str(tokenizer_dir)]
    arguments += ["--sam-checkpoint", str(sam)]
    assert cli.main([*arguments, "--out", str(tmp_path / "m"), "--dtype", "float32"]) == 0
    tensors = load_file(tmp_path / "m" / "selector.safetensors")
    assert all(tensor.dtype == torch.float32 for tensor in tensors.values())
    capsys.readouterr()
    assert cli.main([*arguments, "--out", str(tmp_path / "n"), "--step", "7"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and "global_step7" in error[0]


def test_streamed_safetensors_are_the_bytes_save_file_writes(tmp_path):
    from safetensors.torch import save_file

    tensors = {
        name: torch.randn(*shape).to(torch.bfloat16) for name, shape in (("b.w", (3, 5)), ("a", (7,)), ("c", (1,)))
    }
    outputs = {name: convert_official.Output(tuple(t.shape), (), lambda t=t: t) for name, t in tensors.items()}
    convert_official.write_safetensors(tmp_path / "streamed.safetensors", outputs, dtype=torch.bfloat16)
    save_file(tensors, tmp_path / "reference.safetensors", metadata={"format": "pt"})
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()


def test_a_hub_id_downloads_only_the_chosen_model_states(release, monkeypatch):
    import huggingface_hub

    repo, *_ = release
    files = [
        "README.md",
        "ckpt_model/latest",
        "ckpt_model/global_step100/mp_rank_00_model_states.pt",
        "ckpt_model/global_step5000/mp_rank_00_model_states.pt",
        "ckpt_model/global_step5000/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
    ]
    downloaded = []

    def download(repo_id: str, filename: str) -> str:
        downloaded.append((repo_id, filename))
        return str(repo / filename)

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id: files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    located = convert_official.locate_checkpoint("JCdesu/LLM-Seg-deepspeed")
    assert downloaded == [("JCdesu/LLM-Seg-deepspeed", "ckpt_model/global_step5000/mp_rank_00_model_states.pt")]
    assert located.step == 5000 and "latest of 2" in located.note and located.path.is_file()

    def offline(self, repo_id):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", offline)
    with pytest.raises(ValueError, match="could not fetch JCdesu/LLM-Seg-deepspeed from the Hub"):
        convert_official.locate_checkpoint("JCdesu/LLM-Seg-deepspeed")
