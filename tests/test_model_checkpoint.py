"""Checkpoints: save/load round trips, the real-weights loading path with tiny saved models, name resolution."""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from safetensors import safe_open
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from transformers import (
    CLIPImageProcessor,
    Dinov2Config,
    Dinov2Model,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from llmseg.model import checkpoint, presets
from llmseg.model import sam as sam_module
from llmseg.model.llmseg import LLMSeg
from llmseg.model.presets import get_preset, tiny_dinov2_config, tiny_llava_config
from llmseg.model.proposals import SamProposalGenerator
from llmseg.model.tokenizer import build_word_tokenizer
from llmseg.pipeline import Segmenter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((60, 64, 3), 128, np.uint8)
    target = np.zeros(image.shape[:2], bool)
    target[5:25, 5:30] = True
    image[target] = (220, 30, 35)
    image[35:55, 30:60] = (35, 80, 225)
    return image, target


def train_one_step(model: LLMSeg, query: str = "the red square") -> None:
    """One AdamW step, so LoRA's B matrices and the <SEG> rows leave their initial values."""
    image, target = scene()
    batch = model.prepare_batch([image], [query], [model.proposal_generator(image).masks], [target])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(batch).loss.backward()
    optimizer.step()
    model.eval()


def scores(model: LLMSeg, query: str = "the red square") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    result = Segmenter(model).segment(scene()[0], query)
    return result.iop, result.similarity, result.mask


def assert_same_outputs(first: LLMSeg, second: LLMSeg) -> None:
    for query in ("the red square", "Which shape is blue?"):
        for a, b in zip(scores(first, query), scores(second, query), strict=True):
            assert a.shape == b.shape and a.size > 0
            np.testing.assert_array_equal(a, b)


def test_tiny_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = LLMSeg.from_config(get_preset("tiny"))
    train_one_step(model)
    model.save_pretrained(tmp_path / "tiny")
    files = {path.name for path in (tmp_path / "tiny").iterdir()}
    # Built from a config, the VLM and DINOv2 cannot be referenced by id: they are stored whole.
    assert files == {"config.json", "selector.safetensors", "region_encoder.safetensors", "vlm.safetensors"}
    torch.manual_seed(1)  # a different random start, fully overwritten by the checkpoint
    loaded = LLMSeg.from_pretrained(tmp_path / "tiny")
    assert loaded.config == model.config
    assert_same_outputs(model, loaded)


def build_tiny_sam() -> Sam:
    side, embed = 64, 32
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=side,
            patch_size=16,
            embed_dim=embed,
            depth=1,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=embed,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=embed,
            image_embedding_size=(side // 16, side // 16),
            input_image_size=(side, side),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            transformer=TwoWayTransformer(depth=1, embedding_dim=embed, mlp_dim=64, num_heads=2),
            transformer_dim=embed,
            iou_head_depth=1,
            iou_head_hidden_dim=16,
        ),
    )


@pytest.fixture
def saved_bases(tmp_path, monkeypatch) -> dict[str, Path]:
    """Tiny LLaVA, DINOv2 and SAM saved the way the real ones are published."""
    torch.manual_seed(0)
    monkeypatch.setitem(sam_module.SAM_BUILDERS, "vit_h", build_tiny_sam)
    sam_path = tmp_path / "sam_vit_h_4b8939.pth"
    torch.save(build_tiny_sam().state_dict(), sam_path)

    dinov2_dir = tmp_path / "dinov2"
    Dinov2Model(Dinov2Config(**tiny_dinov2_config(image_size=64, width=32))).save_pretrained(dinov2_dir)

    # A base LLaVA whose tokenizer lacks <SEG> (as llava-hf's does): loading must add and size it.
    tokenizer = build_word_tokenizer(list(presets.TINY_VOCABULARY), seg_token="<reserved>")
    settings = tiny_llava_config(image_size=32, vision_width=32, text_width=64)
    settings["text_config"]["vocab_size"] = len(tokenizer)
    settings["image_token_index"] = tokenizer.convert_tokens_to_ids("<image>")
    llava_dir = tmp_path / "llava"
    LlavaForConditionalGeneration(LlavaConfig(**settings)).save_pretrained(llava_dir)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=tokenizer.chat_template,
        num_additional_image_tokens=1,
    ).save_pretrained(llava_dir)
    return {"sam": sam_path, "dinov2": dinov2_dir, "llava": llava_dir, "vocabulary_size": len(tokenizer)}


def test_real_weights_loading_path_and_adapter_round_trip(tmp_path, saved_bases):
    """The llmseg-7b config with only paths and sizes changed loads through the libraries' own loaders."""
    base = get_preset("llmseg-7b")
    config = dataclasses.replace(
        base,
        proposals=dataclasses.replace(
            base.proposals,
            sam_checkpoint=str(saved_bases["sam"]),
            points_per_side=4,
            pred_iou_thresh=0.0,
            stability_score_thresh=0.0,
            max_side=64,
            pool_size=32,
        ),
        region_encoder=dataclasses.replace(
            base.region_encoder, dinov2=str(saved_bases["dinov2"]), image_size=64, out_dim=32, feature_size=32
        ),
        vlm=dataclasses.replace(base.vlm, llava=str(saved_bases["llava"])),
        selector=dataclasses.replace(
            base.selector, dim=32, num_heads=4, mlp_dim=64, iop_hidden=16, embedding_hidden=64
        ),
    )
    model = LLMSeg.from_config(config)
    assert isinstance(model.proposal_generator, SamProposalGenerator)
    assert model.vlm.llava.dtype == torch.bfloat16
    assert model.vlm.seg_token_id == saved_bases["vocabulary_size"]  # appended after the base vocabulary
    assert model.vlm.llava.get_input_embeddings().weight.shape[0] == saved_bases["vocabulary_size"] + 1
    train_one_step(model)

    folder = model.save_pretrained(tmp_path / "checkpoint")
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert not (folder / "vlm.safetensors").exists()  # the frozen base is referenced by path
    with safe_open(str(folder / "region_encoder.safetensors"), "pt") as stored:
        assert stored.keys() and not any(key.startswith("backbone.") for key in stored.keys())
    with safe_open(str(folder / "adapter" / "adapter_model.safetensors"), "pt") as stored:
        assert any("lora_B" in key for key in stored.keys())
        assert any("embed_tokens.token_adapter" in key for key in stored.keys())
    assert json.loads((folder / "config.json").read_text())["vlm"]["llava"] == str(saved_bases["llava"])

    loaded = LLMSeg.from_pretrained(folder)
    assert_same_outputs(model, loaded)


def test_preset_resolution_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="presets: tiny, shapes, llmseg-7b"):
        checkpoint.resolve("no-such-model")
    with pytest.raises(ValueError, match="convert-official"):
        LLMSeg.from_pretrained("llmseg-7b")
    shapes = dataclasses.replace(presets.PRESETS["shapes"], weights=tmp_path / "not-trained-yet")
    monkeypatch.setitem(presets.PRESETS, "shapes", shapes)
    with pytest.raises(ValueError, match="trained weights are not in this checkout"):
        LLMSeg.from_pretrained("shapes")


def test_hub_ids_resolve_through_snapshot_download(tmp_path, monkeypatch):
    torch.manual_seed(0)
    LLMSeg.from_config(get_preset("tiny")).save_pretrained(tmp_path / "downloaded")
    asked = []

    def fake_download(repo_id: str) -> str:
        asked.append(repo_id)
        return str(tmp_path / "downloaded")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    config, folder = checkpoint.resolve("someone/llmseg-tiny")
    assert asked == ["someone/llmseg-tiny"] and folder == tmp_path / "downloaded" and config.name == "tiny"


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="neither a local folder nor a downloadable Hub model"):
        checkpoint.resolve("someone/not-cached")


def test_incomplete_or_mismatched_checkpoints_are_clear_errors(tmp_path):
    torch.manual_seed(0)
    folder = LLMSeg.from_config(get_preset("tiny")).save_pretrained(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["selector"]["iop_hidden"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match"):
        LLMSeg.from_pretrained(folder)
    (folder / "selector.safetensors").unlink()
    with pytest.raises(ValueError, match="not a complete llmseg checkpoint"):
        LLMSeg.from_pretrained(folder)
    with pytest.raises(ValueError, match="no config.json"):
        LLMSeg.from_pretrained(tmp_path)
