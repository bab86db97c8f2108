"""Write tensors as safetensors files and shards, byte for byte what save_file and save_pretrained write."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from llmseg.model.convert_official.plan import Output

_SAFETENSORS_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def _materialise(output: Output, dtype: torch.dtype, name: str) -> torch.Tensor:
    tensor = output.make().to(dtype).contiguous()
    if dtype == torch.float16 and not torch.isfinite(tensor).all():
        raise ValueError(f"{name} has values float16 cannot hold: convert with --dtype bfloat16 or float32")
    return tensor


def write_safetensors(
    path: Path,
    outputs: Mapping[str, Output],
    *,
    dtype: torch.dtype,
    release: Callable[[Iterable[str]], None] = lambda keys: None,
    progress: tqdm | None = None,
) -> None:
    """``outputs`` as one safetensors file, byte for byte what ``safetensors.torch.save_file`` writes.

    Unlike save_file, which takes every tensor of the file at once, tensors are made, written
    and let go one at a time, ``release`` getting each one's source keys: a shard never has to
    be resident as a whole, so memory does not grow with the shard size.
    """
    names = sorted(outputs)  # save_file's data order for tensors of one dtype
    itemsize = torch.empty((), dtype=dtype).element_size()
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        size = math.prod(outputs[name].shape) * itemsize
        entry = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(outputs[name].shape)}
        header[name] = {**entry, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded)
        for name in names:
            tensor = _materialise(outputs[name], dtype, name)
            file.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
            if progress is not None:
                progress.update(tensor.nbytes)
            del tensor
            release(outputs[name].sources)


def write_shards(
    directory: Path,
    outputs: Mapping[str, Output],
    *,
    dtype: torch.dtype,
    max_shard_size: int,
    release: Callable[[Iterable[str]], None],
    description: str,
) -> None:
    """Write ``outputs`` (keyed by on-disk name) as ``model.safetensors`` or shards + index, as save_pretrained does.

    Shards are cut by huggingface_hub's splitter (save_pretrained's) from meta placeholders.
    """
    from huggingface_hub import split_torch_state_dict_into_shards

    placeholders = {name: torch.empty(output.shape, dtype=dtype, device="meta") for name, output in outputs.items()}
    split = split_torch_state_dict_into_shards(
        placeholders, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
    )
    with tqdm(total=split.metadata["total_size"], unit="B", unit_scale=True, desc=description) as progress:
        for filename, names in split.filename_to_tensors.items():
            shard = {name: outputs[name] for name in names}
            write_safetensors(directory / filename, shard, dtype=dtype, release=release, progress=progress)
    if split.is_sharded:
        total = sum(math.prod(output.shape) for output in outputs.values())
        index = {"metadata": {"total_parameters": total, **split.metadata}, "weight_map": split.tensor_to_filename}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
