"""Reader for the IDX format used by MNIST and Fashion-MNIST (optionally gzip-compressed)."""

import gzip
import pathlib

import numpy as np

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | pathlib.Path) -> np.ndarray:
  """Reads one IDX file (``*.gz`` or raw) into an array of its stored shape.

  Raises:
    ValueError: if the header is not a valid IDX header or the payload size does not match it.
  """
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
    raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r}).")
  dtype, ndim = np.dtype(_DTYPES[data[2]]), data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  payload = data[4 + 4 * ndim:]
  if len(payload) != int(np.prod(shape)) * dtype.itemsize:
    raise ValueError(f"{path}: header says shape {shape}, payload has {len(payload)} bytes.")
  return np.frombuffer(payload, dtype=dtype).reshape(shape)
