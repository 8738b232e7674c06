"""Hot-path tensor ops with a clear tensor contract (gsplat's pairing).

Every fast op has a readable pure-torch twin in an underscore module beside it, with the same signature
and contract; tests compare the two and benchmarks use the twin as their baseline.

* :mod:`mirage.ops.zbuffer` - the deterministic z-buffer (fast path, pure torch).
* :mod:`mirage.ops._zbuffer_reference` - the same z-buffer written the obvious way (sorts and a loop
  over views), for tests and benchmarks.
"""

from mirage.ops.zbuffer import (
    EMPTY_KEY,
    MAX_POINTS,
    pack_depth_index,
    rasterize,
    zbuffer_select,
    zbuffer_select_batched,
)

__all__ = ["EMPTY_KEY", "MAX_POINTS", "pack_depth_index", "zbuffer_select", "zbuffer_select_batched", "rasterize"]
