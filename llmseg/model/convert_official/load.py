"""Read the model-states file memory-mapped, and give back the pages conversion has finished with."""

from __future__ import annotations

import ctypes
import mmap
import pickle
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

_IGNORED_ENTRY_REASONS = {
    "frozen_param_fragments": "DeepSpeed's second copy of the frozen weights, already in 'module'",
}
_IGNORED_ENTRY_DEFAULT = "DeepSpeed training state, not needed for inference"


def load_model_states(path: Path) -> tuple[Mapping[str, torch.Tensor], dict[str, str]]:
    """The ``"module"`` weights of a DeepSpeed model-states file, memory-mapped, and the other entries ignored.

    Tries ``weights_only=True`` first; DeepSpeed can pickle more than tensors and plain
    containers, so it falls back to full unpickling, which runs code from the file: acceptable
    only because the file is the authors' own release (a trusted source).
    """
    try:
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except pickle.UnpicklingError:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except (ModuleNotFoundError, AttributeError) as error:  # a class this environment does not define
        raise ValueError(
            f"{path} pickles objects this environment cannot rebuild ({error}); install the package that "
            "defines them (DeepSpeed) and retry"
        ) from None
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"{path} cannot be read as a PyTorch checkpoint ({str(error).splitlines()[0]}); "
            "it is probably truncated or corrupt: download it again"
        ) from None
    if not isinstance(state, Mapping) or not isinstance(state.get("module"), Mapping):
        found = ", ".join(map(str, state)) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"{path} is not a DeepSpeed model-states file: no 'module' entry (found: {found})")
    module = state["module"]
    for key, value in module.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"'module' entry {key!r} of {path} is a {type(value).__name__}, not a tensor")
    ignored = {str(key): _IGNORED_ENTRY_REASONS.get(str(key), _IGNORED_ENTRY_DEFAULT) for key in state}
    del ignored["module"]
    return module, ignored


class MappedFile:
    """Gives back the pages of a memory-mapped file that conversion has finished with.

    Pages read through the mapping stay in the process's resident set until memory pressure
    evicts them, so a 31 GB file would look like 31 GB of RSS by the end. ``MADV_DONTNEED`` on
    a read-only file mapping just drops them (a later read faults them in again from the file).
    Only ranges that /proc/self/maps shows as mapped from this file are touched: on other
    memory the call would discard data. Linux only; elsewhere ``release`` does nothing.
    """

    def __init__(self, path: Path) -> None:
        self._ranges: list[tuple[int, int]] = []
        if not sys.platform.startswith("linux"):
            return
        target = str(path.resolve())
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() == target:
                    start, end = (int(value, 16) for value in fields[0].split("-"))
                    self._ranges.append((start, end))
        self._madvise = ctypes.CDLL(None, use_errno=True).madvise if self._ranges else None
        if self._madvise is not None:
            self._madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    def release(self, tensors: Iterable[torch.Tensor]) -> None:
        if self._madvise is None:
            return
        page = mmap.PAGESIZE
        for tensor in tensors:
            storage = tensor.untyped_storage()
            start = storage.data_ptr() // page * page
            end = -(-(storage.data_ptr() + storage.nbytes()) // page) * page
            if any(low <= start and end <= high for low, high in self._ranges):
                self._madvise(start, end - start, mmap.MADV_DONTNEED)
