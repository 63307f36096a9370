"""Compute the layers below the lowest modified layer once, and reuse their output.

Layers below the lowest layer with a PEFT module are frozen and unmodified, so their
output (the hidden states entering layer k) depends only on the input tokens. They run
in eval mode (no dropout) in every code path, which makes the cached states exact: a
trial with the cache gives the same result as without it, up to float rounding.

While a `SkipLowerLayers` context is active, layers 0..k-1 are replaced by pass-throughs
and a pre-hook on layer k swaps its input for the cached states of the batch's examples.

`StatesCache` keeps computed states in memory and, given a directory, also on disk, where
other processes (several search workers) and later runs find them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import tempfile
import time
import zlib
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

import numpy as np
import safetensors.torch
import torch
from torch import nn

from autopeft.errors import UserError
from autopeft.log import get_logger
from autopeft.modules.arch import arch_map_for, get_submodule

logger = get_logger(__name__)


class _Passthrough(nn.Module):
    """Stands in for a skipped layer: returns its input hidden states unchanged (in a tuple, for the
    families whose layers return one)."""

    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor | tuple[torch.Tensor]:
        return (hidden_states,) if self.as_tuple else hidden_states


class _Stop(Exception):
    pass


def _layers(model: nn.Module) -> nn.ModuleList:
    return get_submodule(model.base_model, arch_map_for(model).layers)


def set_lower_layers_eval(model: nn.Module, k: int) -> None:
    """Put the embeddings and layers 0..k-1 in eval mode (call after model.train())."""
    if k <= 0:
        return
    model.base_model.get_input_embeddings().eval()
    embeddings = getattr(model.base_model, "embeddings", None)
    if embeddings is not None:
        embeddings.eval()
    for layer in _layers(model)[:k]:
        layer.eval()


@torch.no_grad()
def lower_states(model: nn.Module, k: int, batches: Iterator[dict[str, torch.Tensor]], n: int) -> list[torch.Tensor]:
    """Hidden states entering layer k for each of n examples: list of (len_i, hidden).

    `batches` yields model inputs plus `index` (batch,) and the attention mask; padding
    positions are dropped from the stored states.
    """
    layer_k = _layers(model)[k]
    captured: dict[str, torch.Tensor] = {}

    def grab(_m: nn.Module, args: tuple) -> None:
        captured["h"] = args[0]
        raise _Stop

    states: list[torch.Tensor | None] = [None] * n
    was_training = model.training
    model.eval()
    handle = layer_k.register_forward_pre_hook(grab)
    try:
        for batch in batches:
            with contextlib.suppress(_Stop):  # the hook stops the forward pass at layer k
                model(**{k_: v for k_, v in batch.items() if k_ not in ("labels", "index")})
            lengths = batch["attention_mask"].sum(1).tolist()
            for row, i in enumerate(batch["index"].tolist()):
                # Right padding: the real tokens come first.
                states[i] = captured["h"][row, : lengths[row]].clone()
    finally:
        handle.remove()
        model.train(was_training)
    return states  # type: ignore[return-value]


@contextmanager
def skip_lower_layers(model: nn.Module, k: int, states: list[torch.Tensor]):
    """Within the context, layers < k are skipped; call `feed(index)` before each forward.

    Yields `feed`: feed(index (batch,), width) selects the cached states of those examples,
    right-padded to `width`, as the input of layer k.
    """
    layers = _layers(model)
    originals = [layers[i] for i in range(k)]
    current: dict[str, torch.Tensor] = {}

    def feed(index: torch.Tensor, width: int) -> None:
        rows = [states[i] for i in index.tolist()]
        padded = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
        for r, h in enumerate(rows):
            padded[r, : h.shape[0]] = h
        current["h"] = padded

    def swap_input(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return (current["h"].to(device=args[0].device, dtype=args[0].dtype), *args[1:]), kwargs

    as_tuple = arch_map_for(model).layer_returns_tuple
    for i in range(k):
        layers[i] = _Passthrough(as_tuple)
    handle = layers[k].register_forward_pre_hook(swap_input, with_kwargs=True)
    try:
        yield feed
    finally:
        handle.remove()
        for i, layer in enumerate(originals):
            layers[i] = layer


DEFAULT_MAX_DISK_BYTES = 8 << 30  # 8 GiB
_FILE_NAME = re.compile(r"^[0-9a-f]{64}\.safetensors$")
_TEMP_NAME = re.compile(r"^\.[0-9a-f]{64}\..*\.tmp$")
_STALE_TEMP_S = 3600.0  # a temp file this old was left by a killed writer
_FORMAT = "autopeft-states-1"


class StatesCache:
    """An LRU of lower-layer states shared across trials, keyed by (model, k, tokens).

    Memory: bounded by `max_bytes` (default 2 GiB); the least recently used entry goes first.

    Disk (only when `directory` is given): every computed entry is also written to
    `directory`, one safetensors file per key named by the SHA-256 of the key (model name,
    with the precision, as training.py builds it; k; the token ids), so that other processes
    using the same directory (several search workers) and later runs read it instead of
    computing it. A memory miss looks on disk first. Files are written to a temporary file
    in the same directory and renamed into place, so a reader never sees a partial file;
    a file that cannot be read, is truncated or fails its checksum counts as a miss and is
    overwritten by the recomputed states. The files take at most `max_disk_bytes` (default
    8 GiB): after each write the least recently used files (by modification time, which a
    disk hit refreshes) are deleted; an entry larger than the bound stays in memory only.
    Only files this cache writes are ever deleted. Two processes that miss the same key at
    once both compute it and the last rename wins (the same states either way).
    The key does not fingerprint the weights: if the model behind a name (a local folder)
    changes, empty the directory.
    """

    def __init__(self, max_bytes: int = 2 << 30, directory: str | Path | None = None,
                 max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES) -> None:
        self.max_bytes = max_bytes
        self.max_disk_bytes = max_disk_bytes
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"states cache folder {self.directory} cannot be created ({exc.strerror})") from None
            if not os.access(self.directory, os.W_OK):
                raise UserError(f"states cache folder {self.directory} is not writable")
        self._entries: OrderedDict[tuple, tuple[list[torch.Tensor], int]] = OrderedDict()
        self.hits = self.misses = 0  # hits count memory and disk hits
        self.disk_hits = self.disk_writes = 0

    @staticmethod
    def key(model_name: str, k: int, input_ids: list[list[int]]) -> tuple:
        digest = hashlib.sha256(np.concatenate([np.asarray(ids, dtype="<i8") for ids in input_ids] + [
            np.asarray([len(ids) for ids in input_ids], dtype="<i8")]).tobytes()).hexdigest()
        return (model_name, k, digest)

    def get(self, key: tuple) -> list[torch.Tensor] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return entry[0]
        states = self._read(key) if self.directory is not None else None
        if states is None:
            self.misses += 1
            return None
        self.hits += 1
        self.disk_hits += 1
        self._remember(key, states)
        return states

    def put(self, key: tuple, states: list[torch.Tensor]) -> None:
        self._remember(key, states)
        if self.directory is not None:
            self._write(key, states)

    def _remember(self, key: tuple, states: list[torch.Tensor]) -> None:
        size = sum(s.numel() * s.element_size() for s in states)
        self._entries[key] = (states, size)
        self._entries.move_to_end(key)
        while sum(e[1] for e in self._entries.values()) > self.max_bytes and len(self._entries) > 1:
            self._entries.popitem(last=False)

    # --- disk ------------------------------------------------------------------------------

    @staticmethod
    def _name(key: tuple) -> str:
        return hashlib.sha256(json.dumps(list(key)).encode()).hexdigest()

    def path(self, key: tuple) -> Path:
        """The file of `key` in the cache directory."""
        assert self.directory is not None
        return self.directory / f"{self._name(key)}.safetensors"

    def _read(self, key: tuple) -> list[torch.Tensor] | None:
        path = self.path(key)
        try:
            blob = path.read_bytes()  # read whole, not mmap: a file replaced meanwhile cannot fault
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning(f"states cache: cannot read {path} ({exc.strerror}); recomputing")
            return None
        try:
            states = _decode(blob, key)
        except Exception as exc:  # truncated, corrupt, or not ours: a miss; put() overwrites it
            logger.warning(f"states cache: ignoring unreadable {path.name} ({exc}); recomputing")
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        return states

    def _write(self, key: tuple, states: list[torch.Tensor]) -> None:
        blob = _encode(states, key)
        if len(blob) > self.max_disk_bytes:
            return
        path = self.path(key)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.stem}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
        except OSError as exc:  # disk full, permissions: the trial goes on without the disk copy
            logger.warning(f"states cache: cannot write {path} ({exc.strerror})")
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            return
        self.disk_writes += 1
        self._evict(keep=path)

    def _evict(self, keep: Path) -> None:
        """Delete the least recently used files until the directory holds <= max_disk_bytes."""
        assert self.directory is not None
        files, total, now = [], 0, time.time()
        for entry in os.scandir(self.directory):
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # deleted meanwhile by another process
            if _FILE_NAME.match(entry.name):
                files.append((info.st_mtime, entry.name, info.st_size))
                total += info.st_size
            elif _TEMP_NAME.match(entry.name) and now - info.st_mtime > _STALE_TEMP_S:
                Path(entry.path).unlink(missing_ok=True)
        for _mtime, name, size in sorted(files):
            if total <= self.max_disk_bytes:
                break
            if name == keep.name:
                continue
            (self.directory / name).unlink(missing_ok=True)
            total -= size


def _checksum(*tensors: torch.Tensor) -> str:
    crc = 0
    for t in tensors:
        crc = zlib.crc32(t.contiguous().view(torch.uint8).numpy(), crc)
    return str(crc)


def _encode(states: list[torch.Tensor], key: tuple) -> bytes:
    # numpy, not torch.cat: torch's threaded copy stalls on busy cores (lab notes, "Numbers moved out of code").
    flat = torch.from_numpy(np.concatenate([s.cpu().contiguous().view(torch.uint8).numpy() for s in states]))
    flat = flat.view(states[0].dtype)
    lengths = torch.tensor([s.shape[0] for s in states], dtype=torch.int64)
    meta = {"format": _FORMAT, "key": json.dumps(list(key)), "crc32": _checksum(flat, lengths)}
    return safetensors.torch.save({"states": flat, "lengths": lengths}, metadata=meta)


def _decode(blob: bytes, key: tuple) -> list[torch.Tensor]:
    (header_len,) = struct.unpack("<Q", blob[:8])
    meta = json.loads(blob[8 : 8 + header_len]).get("__metadata__") or {}
    if meta.get("format") != _FORMAT or meta.get("key") != json.dumps(list(key)):
        raise ValueError("not the states of this key")
    tensors = safetensors.torch.load(blob)
    flat, lengths = tensors["states"], tensors["lengths"]
    if flat.dim() != 2 or lengths.dim() != 1 or int(lengths.sum()) != flat.shape[0] or bool((lengths < 0).any()):
        raise ValueError("inconsistent shapes")
    if _checksum(flat, lengths) != meta.get("crc32"):
        raise ValueError("checksum mismatch")
    return list(torch.split(flat, lengths.tolist()))


SHARED_CACHE = StatesCache()


def open_states_cache(directory: str | Path | None) -> StatesCache:
    """The cache that trials use: the in-memory SHARED_CACHE, or one that also keeps `directory`."""
    return SHARED_CACHE if directory is None else StatesCache(directory=directory)
