"""Why `shapes` relation questions fail: per-tag confusion, selector attention, anchor recall.

Runs a model on freshly generated questions (``generate_sample`` keeps each question's scene
graph, so the anchor object of a relation question is known) and records, per question:

- the outcome: right (IoU >= 0.5 with the target), the anchor picked instead, another object
  fitting the description (the right kind, wrong place), some other object, empty while a target
  exists, or a mask for a no-target question;
- whether the anchor object (and the target) is among the proposals (best proposal IoU >= 0.9);
- for a model with the anchor path (``selector.anchor_geometry``), whether its anchor head's top
  proposal is the anchor object (IoU >= 0.5);
- in the last fusion block's proposal self-attention, the weight the target proposal gives the
  anchor proposal, against the uniform 1/K; and in the final proposals->text attention, the
  share of the target proposal's attention on the anchor's words, the described words and the
  relation words.

The reference is the same model's own figure on the other tags (same run). Prints a summary,
writes ``bench/results/shapes_relation_ablation_<name>.json`` and a figure.

    .venv/bin/python bench/shapes_relation_ablation.py --model shapes --seed 17 --count 600
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout, installed or not

import llmseg.model.selector as selector_module  # noqa: E402
from llmseg.data.shapes.anchors import anchor_filters  # noqa: E402
from llmseg.data.shapes.generate import generate_sample  # noqa: E402
from llmseg.data.shapes.queries import Filter, SceneFacts, _the  # noqa: E402
from llmseg.data.shapes.questions import tokenize  # noqa: E402
from llmseg.model.llmseg import LLMSeg  # noqa: E402
from llmseg.pipeline import Segmenter  # noqa: E402

RESULTS = Path(__file__).parent / "results"
OUTCOMES = ("right", "anchor", "described-wrong-place", "other-object", "empty", "false-mask")
RELATION_WORDS = {
    "left", "right", "of", "above", "below", "under", "between", "and", "nearest", "closest", "to",
    "top", "bottom", "next",
}  # fmt: skip
PRESENT_IOU = 0.9


class AttentionRecorder:
    """Wraps ``selector.masked_attention`` to keep the weights of the calls this bench reads."""

    def __init__(self, selector: selector_module.Selector) -> None:
        self.selector = selector
        self.last_self: torch.Tensor | None = None  # (heads, K, K), the last block's proposal self-attention
        self.final: torch.Tensor | None = None  # (heads, K, keys), the final proposals->text attention
        self._original = selector_module.masked_attention

    def __enter__(self) -> AttentionRecorder:
        def recording(attention, q, k, v, key_valid, relation=None):  # type: ignore[no-untyped-def]
            out = self._original(attention, q, k, v, key_valid, relation)
            if attention is self.selector.blocks[-1].self_attn or attention is self.selector.final_attn:
                weights = self._weights(attention, q, k, key_valid, relation)
                if attention is self.selector.final_attn:
                    self.final = weights
                else:
                    self.last_self = weights
            return out

        selector_module.masked_attention = recording
        return self

    def __exit__(self, *_: object) -> None:
        selector_module.masked_attention = self._original

    @staticmethod
    def _weights(attention, q, k, key_valid, relation) -> torch.Tensor:  # type: ignore[no-untyped-def]
        q = attention._separate_heads(attention.q_proj(q), attention.num_heads)
        k = attention._separate_heads(attention.k_proj(k), attention.num_heads)
        scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
        if relation is not None:
            scores = scores + relation.bias
        scores = scores.masked_fill(~key_valid[:, None, None, :], torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1)[0].detach()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def best_proposal(masks: np.ndarray, target: np.ndarray) -> tuple[int, float]:
    scores = [iou(mask, target) for mask in masks]
    index = int(np.argmax(scores)) if scores else -1
    return index, (scores[index] if scores else 0.0)


def phrase_words(filter_: Filter) -> set[str]:
    return set(tokenize(filter_.phrase(False))) | set(tokenize(filter_.phrase(True)))


def analyse(model: LLMSeg, seed: int, split: str, count: int) -> list[dict[str, Any]]:
    segmenter = Segmenter(model, cache_size=0)
    rows = []
    anchor_logits: list[torch.Tensor | None] = [None]
    model.selector.register_forward_hook(lambda _m, _i, out: anchor_logits.__setitem__(0, out.anchor_logit))
    with torch.no_grad(), AttentionRecorder(model.selector) as recorder:
        for index in range(count):
            generated = generate_sample(seed, split, index)
            sample, scene, question = generated.sample, generated.scene, generated.question
            image = np.asarray(scene_image(sample))
            result = segmenter.segment(image, sample.query)
            target = np.asarray(sample.mask, bool)
            masks = result.proposals.masks
            facts = SceneFacts(scene)
            row: dict[str, Any] = {
                "id": sample.id,
                "tags": list(question.tags),
                "query": sample.query,
                "iou": iou(result.mask, target),
                "proposals": len(masks),
            }
            anchor_masks = [scene.masks[_the(a, facts).index] for a in anchor_filters(question.query)]
            row["outcome"] = outcome(result.mask, target, anchor_masks, question, scene, facts)
            if anchor_masks:
                anchor_hits = [best_proposal(masks, a) for a in anchor_masks]
                row["anchor_in_proposals"] = all(score >= PRESENT_IOU for _, score in anchor_hits)
                if anchor_logits[0] is not None and len(masks):
                    top = masks[int(anchor_logits[0][0, : len(masks)].argmax())]
                    row["anchor_head_right"] = any(iou(top, a) >= 0.5 for a in anchor_masks)
            if target.any():
                target_index, target_score = best_proposal(masks, target)
                row["target_in_proposals"] = target_score >= PRESENT_IOU
                if anchor_masks and target_index >= 0 and recorder.last_self is not None:
                    anchor_index = anchor_hits[0][0]
                    row["self_attention_to_anchor"] = float(recorder.last_self[:, target_index, anchor_index].mean())
                    row["uniform"] = 1.0 / len(masks)
                    row["word_shares"] = word_shares(recorder.final, target_index, sample.query, question)
            rows.append(row)
    return rows


def scene_image(sample: Any) -> Any:
    from io import BytesIO

    from PIL import Image

    return Image.open(BytesIO(sample.image)).convert("RGB")


def outcome(
    predicted: np.ndarray, target: np.ndarray, anchors: list[np.ndarray], question: Any, scene: Any, facts: SceneFacts
) -> str:
    if not target.any():
        return "right" if not predicted.any() else "false-mask"
    if not predicted.any():
        return "empty"
    if iou(predicted, target) >= 0.5:
        return "right"
    if any(iou(predicted, anchor) >= 0.5 for anchor in anchors):
        return "anchor"
    try:
        described = question.query.filter.select(facts)
    except AttributeError:
        described = frozenset()
    if any(iou(predicted, scene.masks[i]) >= 0.5 for i in described):
        return "described-wrong-place"
    return "other-object"


def word_shares(final: torch.Tensor | None, proposal: int, query: str, question: Any) -> dict[str, float] | None:
    """Share of the proposal's final attention (mean over heads) on each word group; key 0 is <SEG>."""
    if final is None:
        return None
    words = tokenize(query)
    weights = final[:, proposal].mean(0).cpu().numpy()
    if len(weights) != len(words) + 1:
        return None
    anchor_words: set[str] = set()
    for anchor in anchor_filters(question.query):
        anchor_words |= phrase_words(anchor)
    described = getattr(question.query, "filter", None)
    described_words = phrase_words(described) if isinstance(described, Filter) else set()
    shares: dict[str, float] = defaultdict(float)
    shares["<SEG>"] = float(weights[0])
    for word, weight in zip(words, weights[1:], strict=True):
        if word in RELATION_WORDS:
            group = "relation words"
        elif word in anchor_words and word not in described_words:
            group = "anchor words"
        elif word in described_words:
            group = "described words"
        else:
            group = "other words"
        shares[group] += float(weight)
    return dict(shares)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_tag: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        for tag in row["tags"]:
            by_tag[tag].append(row)
    summary: dict[str, Any] = {"overall_giou": float(np.mean([r["iou"] for r in rows])), "tags": {}}
    ious = np.array([r["iou"] for r in rows])
    means = np.random.default_rng(0).choice(ious, (1000, len(ious))).mean(axis=1)
    summary["overall_interval"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    for tag, tag_rows in sorted(by_tag.items()):
        outcomes = Counter(r["outcome"] for r in tag_rows)
        entry: dict[str, Any] = {
            "n": len(tag_rows),
            "giou": float(np.mean([r["iou"] for r in tag_rows])),
            "outcomes": {name: outcomes.get(name, 0) / len(tag_rows) for name in OUTCOMES},
        }
        targets = [r["target_in_proposals"] for r in tag_rows if "target_in_proposals" in r]
        entry["target_in_proposals"] = float(np.mean(targets)) if targets else None
        anchors = [r["anchor_in_proposals"] for r in tag_rows if "anchor_in_proposals" in r]
        entry["anchor_in_proposals"] = float(np.mean(anchors)) if anchors else None
        head = [r["anchor_head_right"] for r in tag_rows if "anchor_head_right" in r]
        if head:
            entry["anchor_head_right"] = float(np.mean(head))
        attention = [(r["self_attention_to_anchor"], r["uniform"]) for r in tag_rows if "uniform" in r]
        if attention:
            entry["self_attention_to_anchor"] = float(np.mean([a for a, _ in attention]))
            entry["self_attention_uniform"] = float(np.mean([u for _, u in attention]))
        shares = [r["word_shares"] for r in tag_rows if r.get("word_shares")]
        if shares:
            groups = sorted({g for s in shares for g in s})
            entry["word_shares"] = {g: float(np.mean([s.get(g, 0.0) for s in shares])) for g in groups}
        summary["tags"][tag] = entry
    relation = [r for r in rows if "relation" in r["tags"] and "self_attention_to_anchor" in r]
    for name, pick in (("right", lambda r: r["outcome"] == "right"), ("wrong", lambda r: r["outcome"] != "right")):
        chosen = [r for r in relation if pick(r)]
        if chosen:
            summary[f"relation_{name}_attention_to_anchor"] = float(
                np.mean([r["self_attention_to_anchor"] for r in chosen])
            )
    return summary


def figure(summary: dict[str, Any], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = [t for t in summary["tags"]]
    fig, (confusion, attention) = plt.subplots(1, 2, figsize=(13, 4.6), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    bottom = np.zeros(len(tags))
    colours = ["#4c9f4c", "#d62728", "#ff7f0e", "#9467bd", "#7f7f7f", "#8c564b"]
    for name, colour in zip(OUTCOMES, colours, strict=True):
        values = np.array([summary["tags"][t]["outcomes"][name] for t in tags])
        confusion.bar(tags, values, bottom=bottom, color=colour, label=name)
        bottom += values
    for x, tag in enumerate(tags):
        entry = summary["tags"][tag]
        label = f"{entry['giou']:.2f}"
        if entry.get("anchor_in_proposals") is not None:
            label += f"\n({entry['anchor_in_proposals']:.2f})"
        confusion.text(x, 1.01, label, ha="center", va="bottom", fontsize=7)
    confusion.set(
        ylim=(0, 1.12),
        ylabel="share of questions",
        title="What the model picked, per tag (above: gIoU, and the share with the anchor among the proposals)",
    )
    confusion.title.set_fontsize(8)
    confusion.tick_params(axis="x", rotation=30, labelsize=8)
    confusion.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=6)
    relation = summary["tags"].get("relation", {})
    shares = relation.get("word_shares", {})
    if shares:
        groups = list(shares)
        attention.barh(groups, [shares[g] for g in groups], color="#1f77b4")
        attention.set(xlabel="share of the target proposal's final attention", xlim=(0, 1))
    note = (
        f"last block self-attention, target -> anchor: {relation.get('self_attention_to_anchor', float('nan')):.2f}"
        f" (uniform {relation.get('self_attention_uniform', float('nan')):.2f})"
    )
    attention.set_title("Relation questions: what the target proposal attends to\n" + note, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def title_of(summary: dict[str, Any]) -> str:
    return (
        f"{summary['model']} on {summary['count']} fresh questions "
        f"(make-shapes seed {summary['seed']}, {summary['split']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes", help="preset or model folder")
    parser.add_argument("--name", default="release", help="label for the output files")
    parser.add_argument("--seed", type=int, default=17, help="make-shapes seed (never a test seed)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--replot", action="store_true", help="redraw the figure from the results file only")
    args = parser.parse_args()
    out = RESULTS / f"shapes_relation_ablation_{args.name}.json"
    if args.replot:
        summary = json.loads(out.read_text())
        figure(summary, title_of(summary), out.with_suffix(".png"))
        return
    torch.set_num_threads(1)
    model = LLMSeg.from_pretrained(args.model)
    rows = analyse(model, args.seed, args.split, args.count)
    summary = summarise(rows)
    summary.update({"model": args.model, "seed": args.seed, "split": args.split, "count": args.count})
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    figure(summary, title_of(summary), RESULTS / f"shapes_relation_ablation_{args.name}.png")
    print(json.dumps({k: v for k, v in summary.items() if k != "tags"}, indent=2))
    for tag, entry in summary["tags"].items():
        outcomes = ", ".join(f"{k} {v:.2f}" for k, v in entry["outcomes"].items() if v)
        print(
            f"{tag:14s} n={entry['n']:4d} gIoU {entry['giou']:.3f} anchor-in {entry.get('anchor_in_proposals')} "
            f"attn->anchor {entry.get('self_attention_to_anchor')} anchor-head {entry.get('anchor_head_right')} "
            f"| {outcomes}"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
