"""The pipeline's local models: a causal LM through transformers, SAM for box-only annotations.

A tiny randomly initialised Llama writes garbage, which the checks must reject; a real small
model runs the same path when ``LLMSEG_TEST_CAUSAL_LM`` names its folder. A tiny random SAM,
registered with the model's SAM loader, turns EgoObjects-style boxes into masks.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from eval import rle
from llmseg.datagen.__main__ import main
from llmseg.datagen.records import load_images

WIDTH, HEIGHT = 64, 48
# image -> (category, XYWH box, has a polygon)
IMAGES = {
    "kitchen": [("cup", (2, 2, 20, 20), True), ("bottle", (30, 10, 12, 30), False), ("spoon", (50, 30, 10, 10), False)],
    "desk": [("laptop", (0, 0, 40, 30), False), ("mug", (45, 35, 15, 10), False)],
}


def build_coco(root: Path, *, boxes_only: bool) -> tuple[Path, Path]:
    """COCO-format JSON and its images; with ``boxes_only`` most objects have only a box (EgoObjects style)."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    categories = sorted({c for objects in IMAGES.values() for c, _, _ in objects})
    data: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": c} for i, c in enumerate(categories)],
    }
    rng = np.random.default_rng(1)
    for image_id, (name, objects) in enumerate(IMAGES.items()):
        data["images"].append({"id": image_id, "file_name": f"{name}.png", "height": HEIGHT, "width": WIDTH})
        Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(images_dir / f"{name}.png")
        for category, (x, y, w, h), polygon in objects:
            annotation = {
                "id": len(data["annotations"]),
                "image_id": image_id,
                "category_id": categories.index(category),
                "bbox": [x, y, w, h],
                "area": float(w * h),
            }
            if polygon or not boxes_only:
                annotation["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            data["annotations"].append(annotation)
    annotations = root / "instances.json"
    annotations.write_text(json.dumps(data))
    return annotations, images_dir


def _select_args(root: Path, work: Path, *, boxes_only: bool = True) -> list[str]:
    annotations, images = build_coco(root, boxes_only=boxes_only)
    return ["--work", str(work), "--annotations", str(annotations), "--images", str(images), "--source", "ego_objects"]


def tiny_sam():
    """A randomly initialised SAM small enough for a test: 64 px input, 32-d embeddings."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim, size, patch = 32, 64, 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=size,
            patch_size=patch,
            embed_dim=dim,
            depth=1,
            num_heads=2,
            out_chans=dim,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(size // patch, size // patch),
            input_image_size=(size, size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=1,
            iou_head_hidden_dim=16,
        ),
    )


def test_box_only_annotations_get_sam_masks_through_the_model_loader(tmp_path, monkeypatch) -> None:
    from segment_anything import SamPredictor

    from llmseg.model import sam as sam_module

    torch.manual_seed(0)
    model = tiny_sam().eval()
    checkpoint = tmp_path / "tiny_sam.pth"
    torch.save(model.state_dict(), checkpoint)
    monkeypatch.setitem(sam_module.SAM_BUILDERS, "tiny", tiny_sam)
    work = tmp_path / "work"
    args = ["select", *_select_args(tmp_path / "ego", work), "--sam-checkpoint", str(checkpoint)]
    assert main([*args, "--sam-model-type", "tiny"]) == 0
    assert json.loads((work / "summary.json").read_text())["select"]["box_masks_from_sam"] == 4

    predictor = SamPredictor(model)
    for record in load_images(work):
        pixels = np.asarray(Image.open(record.path).convert("RGB"))
        predictor.set_image(pixels)
        for obj, (category, (x, y, w, h), polygon) in zip(
            record.objects, sorted(IMAGES[record.image_id], key=lambda o: -o[1][2] * o[1][3]), strict=True
        ):
            assert obj.category == category
            mask = rle.decode(obj.mask)
            assert mask.shape == (HEIGHT, WIDTH) and obj.area == int(mask.sum())
            if polygon:
                expected = np.zeros((HEIGHT, WIDTH), dtype=bool)
                expected[y : y + h, x : x + w] = True
            else:  # what SAM itself answers for this box
                expected = predictor.predict(box=np.array([x, y, x + w, y + h]), multimask_output=False)[0][0]
            assert np.array_equal(mask, expected), category


def test_box_only_annotations_without_sam_are_a_clear_error(tmp_path, capsys) -> None:
    assert main(["select", *_select_args(tmp_path / "ego", tmp_path / "work")]) == 2
    assert "--sam-checkpoint" in capsys.readouterr().err


def save_tiny_causal_lm(folder: Path) -> None:
    """A 1-layer random Llama and a word-level tokenizer with a chat template, saved like a Hub model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = "the a of and to in is on what which object image box questions question answer json { } [ ] : , .".split()
    specials = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
    vocab = {token: i for i, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials[3:]})
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _pipeline(tmp_path: Path, model_path: str, max_tokens: int) -> tuple[dict, Path]:
    """select -> ask (transformers backend, greedy) -> write, on the fixture with every object a polygon."""
    work, out = tmp_path / "work", tmp_path / "out"
    assert main(["select", *_select_args(tmp_path / "coco", work, boxes_only=False)]) == 0
    ask = ["ask", "--work", str(work), "--backend", "transformers", "--model-path", model_path]
    ask += ["--max-tokens", str(max_tokens), "--temperature", "0", "--questions", "2"]
    assert main(ask) == 0
    first = json.loads((work / "summary.json").read_text())["ask"]
    assert main(ask) == 0  # a re-run is free
    assert json.loads((work / "summary.json").read_text())["ask"]["already_answered"] == len(IMAGES)
    assert main(["write", "--work", str(work), "--out", str(out), "--splits", "train=1"]) == 0
    return {**json.loads((work / "summary.json").read_text()), "first_ask": first}, out


def test_tiny_random_causal_lm_runs_end_to_end_and_its_garbage_is_rejected(tmp_path) -> None:
    model = tmp_path / "tiny-llama"
    save_tiny_causal_lm(model)
    summary, out = _pipeline(tmp_path, str(model), max_tokens=12)
    ask = summary["first_ask"]
    assert (ask["requests"], ask["failed"]) == (len(IMAGES), 0)
    assert ask["prompt_tokens"] > 0 and 0 < ask["completion_tokens"] <= 12 * len(IMAGES)
    assert summary["write"]["kept"] == 0
    assert summary["write"]["rejected"] == {"malformed-json": len(IMAGES)}
    assert summary["write"]["empty_splits"] == ["train"] and not out.exists()


@pytest.mark.skipif(not os.environ.get("LLMSEG_TEST_CAUSAL_LM"), reason="set LLMSEG_TEST_CAUSAL_LM to a model folder")
def test_a_real_small_causal_lm_writes_checked_questions(tmp_path) -> None:
    summary, out = _pipeline(tmp_path, os.environ["LLMSEG_TEST_CAUSAL_LM"], max_tokens=512)
    assert summary["first_ask"]["failed"] == 0
    rows = datasets.load_dataset(str(out), split="train")
    assert rows.num_rows == summary["write"]["kept"]
    assert all(np.asarray(row["mask"]).any() for row in rows)


def test_describe_with_a_local_llava_through_the_model_loading_code(tmp_path, capsys) -> None:
    import dataclasses

    from llmseg.model.presets import get_preset
    from llmseg.model.vlm import VLM

    torch.manual_seed(0)
    vlm = VLM.from_config(dataclasses.replace(get_preset("tiny").vlm, finetune="full"))
    folder = tmp_path / "tiny-llava"
    vlm.llava.save_pretrained(folder)
    vlm.processor.save_pretrained(folder)
    work = tmp_path / "work"
    assert main(["select", *_select_args(tmp_path / "coco", work, boxes_only=False)]) == 0
    describe = ["describe", "--work", str(work), "--describe-backend", "vlm", "--vlm", str(folder)]
    assert main([*describe, "--describe-max-tokens", "6"]) == 0
    descriptions = {r["image_id"]: r["description"] for r in map(json.loads, (work / "descriptions.jsonl").open())}
    assert sorted(descriptions) == sorted(IMAGES) and all(descriptions.values())
    assert main([*describe, "--describe-max-tokens", "6"]) == 0
    assert json.loads((work / "summary.json").read_text())["describe"]["already_answered"] == len(IMAGES)
    capsys.readouterr()
    assert (
        main(["ask", "--work", str(work), "--dry-run", "--api-base", "http://127.0.0.1:9/v1", "--api-model", "m"]) == 0
    )
    printed = capsys.readouterr().out
    assert all(description in printed for description in descriptions.values())
