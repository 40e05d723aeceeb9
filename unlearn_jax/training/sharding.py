"""Data parallelism over a device mesh: the one module that knows about meshes and shardings.

The batch (or, for populations, the model axis) is split over a 1-D mesh axis ``"data"`` of every
device of every process; parameters and optimiser state are replicated. ``jax.jit`` then runs one
SPMD program; gradients of replicated parameters are reduced over the mesh by XLA.

Multi-process runs: every process computes the same global host values (batches, states and
keys are functions of the seed); :func:`replicate` and :func:`shard_leading` then move only the
rows of the devices a process owns, and :func:`to_host` gives every process the whole result.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from unlearn_jax.data.batching import iterate, pad_to_multiple
from unlearn_jax.data.datasets import ArrayDataset, pixels_to_float
from unlearn_jax.data.records import RecordImages

AXIS = "data"
# Programs with collectives dispatched on CPU devices between host syncs: 50–100 unsynced ones
# can deadlock XLA:CPU's in-process collectives (design.md); loops sync every few.
SYNC_EVERY = 8


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first ``num_devices`` devices (default: all, across processes).

  Its axis is ``Auto`` so plain data-parallel jit works (``jax.make_mesh`` defaults to Explicit
  axes in JAX 0.10, where a gradient contracting over the sharded batch fails).
  """
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"num_devices: {num_devices} is not in 1..{len(devices)} (devices present).")
  return jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Auto,), devices=devices[:n])


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def split(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading axis split over the mesh."""
  return NamedSharding(mesh, P(AXIS))


def _put(x, sharding: NamedSharding) -> jax.Array:
  """``x``, the same global value on every process, as an array with ``sharding``; each process
  transfers only the slices of its own devices (and reads only those of images read by index,
  :class:`~unlearn_jax.data.records.RecordImages`)."""
  if isinstance(x, RecordImages):
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  if jax.process_count() == 1 or (isinstance(x, jax.Array) and not x.is_fully_addressable):
    return jax.device_put(x, sharding)
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    data = _put(jax.random.key_data(x), sharding)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def replicate(tree, mesh: jax.sharding.Mesh):
  """``tree`` (the same on every process) replicated on every device of the mesh."""
  return jax.tree.map(lambda x: _put(x, replicated(mesh)), tree)


def shard_leading(tree, mesh: jax.sharding.Mesh, *, what: str = "batch"):
  """Puts global arrays on the mesh, the leading axis split over devices (scalars replicated).

  Every process passes the same global value; in a multi-process run each process transfers
  only the rows of its own devices (rows ``[i·B/n, (i+1)·B/n)`` go to mesh device ``i``).

  Raises:
    ValueError: a leading axis that the device count does not divide.
  """
  n = mesh.devices.size

  def put(x):
    if np.ndim(x) == 0:
      return _put(x, replicated(mesh))
    if np.shape(x)[0] % n:
      raise ValueError(f"{what}: leading size {np.shape(x)[0]} is not divisible by the {n} "
                       f"devices of the mesh; choose a multiple of {n}.")
    return _put(x, split(mesh))

  return jax.tree.map(put, tree)


def to_host(tree):
  """NumPy copies of ``tree``'s arrays; in a multi-process run every process gets the whole
  value of an array split over other processes' devices (a collective: all processes call it)."""
  def get(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      return multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)

  return jax.tree.map(get, tree)


def jit_sharded(step, mesh: jax.sharding.Mesh, *, split_state: bool = False, donate: bool = True):
  """``jax.jit`` of a ``step(state, batch, key, frozen)`` with its state donated.

  Args:
    split_state: the state's leading axis is a model axis split over the mesh (populations);
      otherwise the state is replicated.

  Metrics come back replicated, so every process can read them.
  """
  state_sharding = split(mesh) if split_state else replicated(mesh)
  return jax.jit(step, out_shardings=(state_sharding, replicated(mesh)),
                 donate_argnums=(0,) if donate else ())




def _placed_batches(data: ArrayDataset, batch_size: int, mesh: jax.sharding.Mesh):
  """(host batch, (images as stored, labels, mask, index) on the mesh) for every padded batch
  of data."""
  if len(data) == 0:
    raise ValueError("data: a pass over a dataset needs at least one example.")
  batch_size = pad_to_multiple(min(batch_size, len(data)), mesh.devices.size)
  for b, batch in enumerate(iterate(data, batch_size, stored=True)):
    placed = shard_leading((batch["image"], batch["label"], batch["mask"]), mesh)
    yield batch, (*placed, replicate(np.int32(b), mesh))


@functools.cache
def _on_floats(fn):
  """``fn(*args, images, labels, mask, index)`` given images converted to floats in [0, 1] in
  the same program (:func:`~unlearn_jax.data.datasets.pixels_to_float`)."""
  return jax.jit(lambda *a: fn(*a[:-4], pixels_to_float(a[-4]), *a[-3:]))


def map_batches(fn, data: ArrayDataset, *, batch_size: int, replicated_args=(),
                mesh: jax.sharding.Mesh | None = None):
  """Per-example outputs of the jitted ``fn(*replicated_args, images, labels, mask, index)``
  over ``data``, in order, as NumPy arrays on every process.

  Batches of ``batch_size`` (at most ``len(data)``, rounded up to a multiple of the device count,
  the last one padded: ``mask`` 0) are split over ``mesh`` (default: all devices);
  ``replicated_args`` (parameters, keys) are replicated; ``index`` is the batch's number (int32,
  for ``fold_in``); images arrive as floats in [0, 1] (uint8 pixels are placed as such and
  converted in the program). ``fn`` returns a pytree of arrays with the batch as leading axis;
  padding rows are dropped. Small per-device batches keep a program's buffers in cache on CPU
  (docs/performance.md).
  """
  mesh = mesh or make_mesh()
  args = replicate(replicated_args, mesh)
  outs = []
  for batch, placed in _placed_batches(data, batch_size, mesh):
    keep = batch["mask"] > 0
    outs.append(jax.tree.map(lambda x, keep=keep: x[keep],
                             to_host(_on_floats(fn)(*args, *placed))))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


def sum_batches(fn, data: ArrayDataset, *, batch_size: int, replicated_args=(),
                mesh: jax.sharding.Mesh | None = None):
  """``(Σ_batches fn(...), number of batches)`` over ``data``, batched and placed as in
  :func:`map_batches`; ``fn`` returns a pytree (e.g. a gradient), the sum comes back in NumPy."""
  mesh = mesh or make_mesh()
  args = replicate(replicated_args, mesh)
  total, count = None, 0
  fn = _on_floats(fn)
  for _, placed in _placed_batches(data, batch_size, mesh):
    total = fn(*args, *placed) if total is None else _add_to(fn)(total, *args, *placed)
    count += 1
    if count % SYNC_EVERY == 0:
      jax.block_until_ready(total)
  return to_host(total), count


@functools.cache
def _add_to(fn):
  """One program per batch: ``total + fn(...)``."""
  return jax.jit(lambda total, *a: jax.tree.map(jnp.add, total, fn(*a)))
