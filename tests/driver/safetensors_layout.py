"""An independent reader of the safetensors layout, written from the format's
description (8-byte little-endian header size, JSON header with dtype, shape
and data_offsets relative to the end of the header, raw little-endian bytes),
sharing no code with libckpt."""
import json
import struct

import numpy as np

DTYPES = {"F32": np.dtype("<f4"), "BF16": np.dtype("<u2"), "U64": np.dtype("<u8"), "U8": np.dtype("u1")}


def read(path):
    """Returns (metadata, {name: numpy array}); BF16 comes back as raw uint16."""
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    end_of_data = 0
    for name, t in header.items():
        begin, end = t["data_offsets"]
        dtype = DTYPES[t["dtype"]]
        count = int(np.prod(t["shape"])) if t["shape"] else 1
        assert end - begin == count * dtype.itemsize, name
        tensors[name] = np.frombuffer(data, dtype=dtype, count=count, offset=base + begin)
        end_of_data = max(end_of_data, end)
    assert base + end_of_data == len(data), "trailing or missing bytes"
    return meta, tensors


def bf16_round(f32):
    """fp32 -> bf16 bits, round to nearest even (NaN handling not needed here)."""
    u = f32.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
