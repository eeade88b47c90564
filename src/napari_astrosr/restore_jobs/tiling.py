"""Restore a 2-D dask array larger than memory block by block: :func:`restore_dask` (moved from ``batch``).

Every block is restored with its neighbours' pixels around it (``depth`` input pixels on each inner side) by
the one public entry point, :func:`napari_astrosr.restoration.restore`, and the halo is cut from the result
(the engine is :func:`napari_astrosr.restore_jobs.blocks.tile_restore`). Where the method's influence radius
(interpolation kernel, PSF, iterations, network receptive field) is smaller than ``depth``, the tiled result
equals the in-memory restore (``tests/test_batch.py`` proves it); image edges are real edges in both, because
blocks are padded only with real neighbour data. Flux: as the method in memory, block by block.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from ..restoration import restore
from ..restore_options import RestoreOptions
from .blocks import tile_restore


def restore_dask(
    darr: Any,
    *,
    options: Optional[RestoreOptions] = None,
    depth: Optional[int] = None,
    chunks: Union[int, tuple, str, None] = None,
    **option_kwargs: Any,
):
    """Restore a 2-D (dask) array block by block with overlap; returns a lazy dask array.

    Each block is restored by :func:`napari_astrosr.restoration.restore`; the arguments, defaults (``device``
    ``cpu``, ``depth`` :func:`~napari_astrosr.restore_jobs.blocks.default_depth`, ``chunks`` the input's or 1024),
    result (float32, ``scale`` times the shape, lazy) and flux behaviour are those of
    :func:`napari_astrosr.restore_jobs.blocks.tile_restore`.
    """
    return tile_restore(darr, restore_array=restore, options=options, depth=depth, chunks=chunks, **option_kwargs)


__all__ = ["restore_dask"]
