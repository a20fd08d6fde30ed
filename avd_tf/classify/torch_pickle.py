"""Read PyTorch ``state_dict`` checkpoints into NumPy without importing torch.

Used to port genuinely pretrained ImageNet weights (EfficientNet-Lite0, see
``avd_tf.classify.efficientnet_lite``) to Keras; the paper fine-tunes ImageNet
backbones on distilled images (Sec. 4.2, Table 2) and this machine cannot
download Keras weights.

Both PyTorch on-disk formats are supported:

* legacy (``torch.save(..., _use_new_zipfile_serialization=False)`` and
  torch < 1.6): consecutive pickles -- magic number, protocol version,
  system info, the object, the list of storage keys -- followed by each
  storage as an int64 element count and its raw bytes;
* zip (torch >= 1.6): ``<name>/data.pkl`` plus one raw file
  ``<name>/data/<key>`` per storage.

Unpickling runs through :class:`RestrictedUnpickler`, which resolves only the
handful of globals a plain tensor ``state_dict`` needs and refuses anything
else, so a crafted checkpoint cannot run code (a normal ``pickle.load`` of a
checkpoint executes whatever callable the file names).
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Callable, NamedTuple

import ml_dtypes
import numpy as np

__all__ = [
    "CheckpointError",
    "RefusedGlobalError",
    "RestrictedUnpickler",
    "load_state_dict",
]

# torch.serialization.MAGIC_NUMBER and PROTOCOL_VERSION of the legacy format.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Storage classes as torch pickles them (legacy names are still written by
# torch 2.x) with the element type of their raw bytes.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupt or not a tensor state_dict."""


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (possible code execution)."""


class _StorageType(NamedTuple):
    """Stands in for ``torch.<X>Storage``: only its element type matters."""

    name: str
    dtype: np.dtype


class _Storage(NamedTuple):
    """A flat typed buffer, named by ``key``; its bytes are read separately."""

    key: str
    dtype: np.dtype
    numel: int


class _StorageView(NamedTuple):
    """Legacy-format view of ``numel`` elements of a root storage at ``offset``."""

    root: _Storage
    offset: int
    numel: int


class _TensorRef(NamedTuple):
    """A tensor waiting for its storage bytes (legacy files store them last)."""

    storage: _Storage | _StorageView
    offset: int
    shape: tuple
    stride: tuple


class _Rebuild(NamedTuple):
    """An allow-listed torch function, as a callable the pickle cannot modify."""

    func: Callable[..., Any]

    def __call__(self, *args):
        return self.func(*args)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                       backward_hooks, metadata=None):
    del requires_grad, backward_hooks, metadata  # Training state, not weights.
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad, backward_hooks):
    del requires_grad, backward_hooks
    return data


# Everything a pickle can reach is immutable (named tuples, the OrderedDict
# class), so a BUILD opcode cannot tamper with objects shared across loads.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _Rebuild(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Rebuild(_rebuild_parameter),
    **{("torch", name): _StorageType(name, dtype)
       for name, dtype in _STORAGE_DTYPES.items()},
}


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of a tensor ``state_dict``.

    ``find_class`` maps the allowed torch names to torch-free stand-ins and
    raises :class:`RefusedGlobalError` (a ``pickle.UnpicklingError``) naming
    ``module.name`` and the file for any other global, before anything is
    called. ``persistent_load`` turns torch's storage records into storage
    descriptions registered in ``storages`` (key -> storage).
    """

    def __init__(self, file: BinaryIO, path: str, storages: dict[str, _Storage]):
        super().__init__(file)
        self._path = path
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobalError(
                f"{self._path}: refusing to load global '{module}.{name}': "
                "only tensor state_dict globals are allowed") from None

    def persistent_load(self, pid: Any) -> _Storage | _StorageView:
        # Legacy: ('storage', type, key, location, numel, view_metadata);
        # zip: ('storage', type, key, location, numel).
        if (not isinstance(pid, tuple) or len(pid) not in (5, 6)
                or pid[0] != "storage" or not isinstance(pid[1], _StorageType)
                or not isinstance(pid[2], str) or not _is_count(pid[4])):
            raise CheckpointError(
                f"{self._path}: unsupported persistent record {pid!r} "
                "(only tensor storages are supported)")
        storage = self.storages.setdefault(
            pid[2], _Storage(pid[2], pid[1].dtype, pid[4]))
        if storage.dtype != pid[1].dtype or storage.numel != pid[4]:
            raise CheckpointError(
                f"{self._path}: storage {pid[2]} is declared twice with "
                "different types or sizes")
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return storage
        if not (isinstance(view, tuple) and len(view) == 3
                and _is_count(view[1]) and _is_count(view[2])
                and view[1] + view[2] <= storage.numel):
            raise CheckpointError(
                f"{self._path}: bad view {view!r} of storage {pid[2]}")
        return _StorageView(storage, view[1], view[2])


def _unpickle(f: BinaryIO, path: str, storages: dict[str, _Storage]) -> Any:
    try:
        return RestrictedUnpickler(f, path, storages).load()
    except (RefusedGlobalError, CheckpointError):
        raise
    except (EOFError, pickle.UnpicklingError, struct.error, ValueError,
            TypeError, IndexError, AttributeError, KeyError) as e:
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint pickle ({e!r})") from e


def _read_legacy(f: BinaryIO, path: str) -> tuple[Any, dict[str, np.ndarray]]:
    storages: dict[str, _Storage] = {}
    if _unpickle(f, path, storages) != _LEGACY_MAGIC:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    protocol = _unpickle(f, path, storages)
    if protocol != _LEGACY_PROTOCOL:
        raise CheckpointError(
            f"{path}: unsupported legacy protocol version {protocol!r}")
    sys_info = _unpickle(f, path, storages)
    if not isinstance(sys_info, dict):
        raise CheckpointError(f"{path}: corrupt system-info record")
    byteorder = "<" if sys_info.get("little_endian", True) else ">"
    obj = _unpickle(f, path, storages)
    keys = _unpickle(f, path, storages)
    if not isinstance(keys, list):
        raise CheckpointError(f"{path}: corrupt storage key list")
    buffers = {}
    for key in keys:
        if key not in storages:
            raise CheckpointError(f"{path}: storage {key} is listed but unused")
        storage = storages[key]
        header = f.read(8)
        if len(header) < 8:
            raise CheckpointError(f"{path}: truncated before storage {key}")
        (numel,) = struct.unpack(byteorder + "q", header)
        if numel != storage.numel:
            raise CheckpointError(
                f"{path}: storage {key} holds {numel} elements, the pickle "
                f"says {storage.numel}")
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) < nbytes:
            raise CheckpointError(
                f"{path}: truncated in storage {key} ({len(raw)} of {nbytes} bytes)")
        buffers[key] = np.frombuffer(raw, storage.dtype.newbyteorder(byteorder))
    return obj, buffers


def _read_zip(path: str) -> tuple[Any, dict[str, np.ndarray]]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{path}: corrupt zip checkpoint ({e})") from e
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointError(
                f"{path}: zip checkpoint must hold exactly one data.pkl, "
                f"found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in names:
            byteorder = {"little": "<", "big": ">"}.get(
                archive.read(prefix + "byteorder").decode("ascii", "replace"))
            if byteorder is None:
                raise CheckpointError(f"{path}: unknown byteorder record")
        storages: dict[str, _Storage] = {}
        buffers = {}
        try:
            with archive.open(pickles[0]) as f:
                obj = _unpickle(f, path, storages)
            for key, storage in storages.items():
                raw = archive.read(f"{prefix}data/{key}")
                nbytes = storage.numel * storage.dtype.itemsize
                if len(raw) != nbytes:
                    raise CheckpointError(
                        f"{path}: storage {key} has {len(raw)} bytes, expected "
                        f"{nbytes} (truncated or corrupt)")
                buffers[key] = np.frombuffer(raw, storage.dtype.newbyteorder(byteorder))
        except KeyError as e:
            raise CheckpointError(f"{path}: missing storage record {e}") from e
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise CheckpointError(f"{path}: corrupt zip checkpoint ({e})") from e
    return obj, buffers


def _materialise(ref: _TensorRef, buffers: dict[str, np.ndarray], name: str,
                 path: str) -> np.ndarray:
    storage = ref.storage
    if isinstance(storage, _StorageView):
        base, limit = storage.offset, storage.numel
        storage = storage.root
    elif isinstance(storage, _Storage):
        base, limit = 0, storage.numel
    else:
        raise CheckpointError(f"{path}: tensor {name} is not backed by a storage")
    if (not _is_count(ref.offset) or len(ref.shape) != len(ref.stride)
            or not all(map(_is_count, ref.shape + ref.stride))):
        raise CheckpointError(
            f"{path}: tensor {name} has offset {ref.offset!r}, shape "
            f"{ref.shape!r} and stride {ref.stride!r}")
    if storage.key not in buffers:
        raise CheckpointError(f"{path}: tensor {name} has no stored data")
    if 0 in ref.shape:
        return np.zeros(ref.shape, storage.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
    if last >= limit:
        raise CheckpointError(
            f"{path}: tensor {name} (offset {ref.offset}, shape {ref.shape}, "
            f"stride {ref.stride}) reaches outside its storage of {limit} elements")
    flat = buffers[storage.key][base + ref.offset:]
    view = np.lib.stride_tricks.as_strided(
        flat, shape=ref.shape,
        strides=tuple(s * flat.itemsize for s in ref.stride), writeable=False)
    # Copy into a native-endian, contiguous array that owns its memory.
    return np.ascontiguousarray(view, dtype=storage.dtype.newbyteorder("="))


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch ``state_dict`` file (legacy or zip) as NumPy arrays.

    Returns ``{parameter name: array}`` in file order, each array contiguous,
    native-endian, with the tensor's shape (strides and storage offsets are
    honoured). Raises ``pickle.UnpicklingError`` (:class:`RefusedGlobalError`)
    if the file names any global outside the allow-list, and
    :class:`CheckpointError` if it is truncated, corrupt or not a flat
    mapping of names to tensors; both messages name the file.
    """
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            obj, buffers = _read_zip(path)
        else:
            with open(path, "rb") as f:
                obj, buffers = _read_legacy(f, path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e})") from e
    if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, _TensorRef) for k, v in obj.items()):
        raise CheckpointError(
            f"{path}: not a state_dict (expected a mapping of names to tensors)")
    return {name: _materialise(ref, buffers, name, path)
            for name, ref in obj.items()}
