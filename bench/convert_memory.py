"""Peak memory of ``convert-official`` against the checkpoint's size, on synthetic release-shaped checkpoints.

Builds checkpoints with the release's key names and LLaMA-7B widths (vocab 32004, hidden 4096,
MLP 11008) but fewer layers, random bf16 values (the tests' miniature builder at full width),
converts each in a fresh subprocess and reads that process's peak resident set (``VmHWM``).
In the same run, each in its own subprocess:
- ``imports``: a process that only imports what conversion imports (the floor of any run);
- ``streaming``: the converter as shipped;
- ``streaming_no_release``: the same with page release switched off (pages read from the
  memory map then stay resident until the kernel needs the memory);
- ``torch_load``: the reference, ``torch.load`` without ``mmap`` (what a converter that loads
  the state dict pays before doing anything).
Prints a table and writes ``bench/results/convert_memory.json``; temporary files are deleted.

    .venv/bin/python bench/convert_memory.py [--layers 2 6] [--workdir /tmp]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "convert_memory.json"

BUILD = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_convert_official import RELEASE_7B, release_module, write_release
sizes = dict(RELEASE_7B, layers={layers}, clip_layers=2, dino_layers=2)
write_release(__import__("pathlib").Path({repo!r}), release_module(sizes, std=0.02))
"""

# VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across fork and exec.
PEAK = """
import json
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_bytes": peak}))
"""

IMPORTS = """
import torch, peft, transformers
from transformers import Dinov2Model, LlavaForConditionalGeneration
import llmseg.model.convert_official, llmseg.model.region_encoder, llmseg.model.selector, llmseg.model.vlm
"""

CONVERT = """
from llmseg.model import convert_official
if {no_release}:
    convert_official.MappedFile.release = lambda self, tensors: None
convert_official.convert_official({repo!r}, base_tokenizer={tokenizer!r}, sam_checkpoint={sam!r}, out={out!r})
"""

TORCH_LOAD = """
import torch
state = torch.load({file!r}, map_location="cpu", weights_only=True)
"""


def filler_tokenizer(folder: Path, size: int = 32000, text: str = "") -> None:
    """A word-level stand-in for LLaMA's 32000-token tokenizer: <unk> 0, <s> 1, </s> 2, the words of ``text``,
    then filler words up to ``size``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for word, _ in splitter.pre_tokenize_str(text):
        vocab.setdefault(word, len(vocab))
    for index in range(size - len(vocab)):
        vocab[f"filler{index}"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = splitter
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(folder)


def run(code: str) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of a fresh Python process running ``code``."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code + "\n" + PEAK], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"subprocess failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"], time.perf_counter() - started


def measure(layers: int, workdir: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(dir=workdir, prefix="convert-memory-") as temp:
        temp_path = Path(temp)
        repo = temp_path / "repo"
        run(BUILD.format(tests=str(ROOT / "tests"), layers=layers, repo=str(repo)))
        file = next(repo.rglob("mp_rank_00_model_states.pt"))
        filler_tokenizer(temp_path / "tokenizer")
        sam = temp_path / "sam_vit_h_4b8939.pth"
        sam.write_bytes(b"unused")
        row: dict[str, object] = {"layers": layers, "file_bytes": file.stat().st_size}
        row["imports_peak_bytes"], _ = run(IMPORTS)
        for name, no_release in (("streaming", False), ("streaming_no_release", True)):
            out = temp_path / f"out-{name}"
            code = CONVERT.format(
                no_release=no_release,
                repo=str(repo),
                tokenizer=str(temp_path / "tokenizer"),
                sam=str(sam),
                out=str(out),
            )
            row[f"{name}_peak_bytes"], row[f"{name}_seconds"] = run(code)
            shutil.rmtree(out)
        row["torch_load_peak_bytes"], row["torch_load_seconds"] = run(TORCH_LOAD.format(file=str(file)))
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 6], help="LLaMA layers of each checkpoint")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where temp files go")
    args = parser.parse_args()

    rows = [measure(layers, args.workdir) for layers in args.layers]
    gib = 2**30
    print(f"{'layers':>6} {'file GiB':>9} {'imports':>8} {'stream':>8} {'no rel.':>8} {'torch.load':>10}  stream/file")
    for row in rows:
        row["streaming_over_file"] = row["streaming_peak_bytes"] / row["file_bytes"]
        row["streaming_over_torch_load"] = row["streaming_peak_bytes"] / row["torch_load_peak_bytes"]
        row["streaming_above_imports_bytes"] = row["streaming_peak_bytes"] - row["imports_peak_bytes"]
        print(
            f"{row['layers']:>6} {row['file_bytes'] / gib:>9.2f} {row['imports_peak_bytes'] / gib:>8.2f} "
            f"{row['streaming_peak_bytes'] / gib:>8.2f} {row['streaming_no_release_peak_bytes'] / gib:>8.2f} "
            f"{row['torch_load_peak_bytes'] / gib:>10.2f}  {row['streaming_over_file']:.2f}"
        )
    result = {
        "benchmark": "convert_memory",
        "unit": "bytes (peak resident set, VmHWM) and seconds",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
