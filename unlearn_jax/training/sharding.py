"""Data parallelism over a device mesh: the one module that knows about meshes and shardings.

The batch (or, for populations, the model axis) is split over a 1-D mesh axis ``"data"`` of every
device of every process; parameters and optimiser state are replicated. ``jax.jit`` then runs one
SPMD program; gradients of replicated parameters are reduced over the mesh by XLA.
"""

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


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
  return NamedSharding(mesh, P())


def split(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading axis split over the mesh."""
  return NamedSharding(mesh, P(AXIS))


def replicate(tree, mesh: jax.sharding.Mesh):
  return jax.device_put(tree, replicated(mesh))


def shard_leading(tree, mesh: jax.sharding.Mesh, *, what: str = "batch"):
  """Puts host arrays on the mesh, the leading axis split over devices (scalars replicated).

  In a multi-process run each process passes its own rows (its slice of the global leading
  axis), which :func:`jax.make_array_from_process_local_data` assembles into one global array.

  Raises:
    ValueError: a leading axis that the device count does not divide.
  """
  n = mesh.devices.size
  local = n // jax.process_count()

  def put(x):
    if isinstance(x, jax.Array) and jax.process_count() == 1:
      return jax.device_put(x, split(mesh) if x.ndim else replicated(mesh))
    x = np.asarray(x)
    if x.ndim == 0:
      return jax.device_put(x, replicated(mesh))
    if x.shape[0] % local:
      raise ValueError(
          f"{what}: leading size {x.shape[0] * jax.process_count()} is not divisible by the "
          f"{n} devices of the mesh; choose a multiple of {n}.")
    return jax.make_array_from_process_local_data(split(mesh), x)

  return jax.tree.map(put, tree)


def jit_sharded(step, mesh: jax.sharding.Mesh, *, split_state: bool = False, donate: bool = True):
  """``jax.jit`` of a ``step(state, batch, key, frozen)`` with its state donated.

  Args:
    split_state: the state's leading axis is a model axis split over the mesh (populations);
      otherwise the state is replicated.
  """
  state_sharding = split(mesh) if split_state else replicated(mesh)
  return jax.jit(step, out_shardings=(state_sharding, state_sharding if split_state else
                                      replicated(mesh)),
                 donate_argnums=(0,) if donate else ())
