"""Batch and very-large-image restoration on Dask (``astrosr batch``): a facade.

The code moved, one module per job, to :mod:`napari_astrosr.restore_jobs`: the tiling engine,
``RestoreParams``, the model cache and the whole-image choices to ``restore_jobs.blocks``, ``restore_dask``
to ``restore_jobs.tiling``, the streaming FITS restore (``restore_fits_tiled_job``, ``FitsSection``,
``peak_rss``) to ``restore_jobs.stream`` and the cluster batch (``batch_job``, ``restore_file``, the
``ASRHASH`` cache) to ``restore_jobs.batch``. The names below are re-exported so that
``from napari_astrosr.batch import ...`` keeps working.

Three layers, each usable on its own:

- :func:`restore_dask` restores a 2-D dask array block by block with overlap and returns a lazy
  dask array on the ``scale`` times finer grid. Every block is restored with its neighbours' pixels
  around it (``depth`` input pixels on each inner side) by the one public entry point,
  :func:`napari_astrosr.restoration.restore`, and the halo is cut from the result. Where the method's
  influence radius (interpolation kernel, PSF, iterations, network receptive field) is smaller than
  ``depth``, the tiled result equals the in-memory restore (``tests/test_batch.py`` proves it);
  image edges are real edges in both, because blocks are padded only with real neighbour data.
- :func:`restore_fits_tiled` streams a FITS file larger than memory: the input is read in sections
  from the memory-mapped file (astropy ``section``; uncompressed or tile-compressed files), the output
  FITS is pre-allocated with its final header in a temporary file next to the target, written section
  by section through ``numpy.memmap`` and renamed into place only when complete. Peak memory is a few
  blocks, not the image (measured in ``docs/results_batch.md``).
- :func:`batch_job` restores many files on a Dask distributed cluster (a ``LocalCluster`` or any
  scheduler address): one task per file, retried once on failure, outputs written atomically, files
  already done skipped by a content hash stored in the output header (``ASRHASH``).

Flux: the tiled path changes nothing about flux beyond what the method does in memory; total and
per-source flux of the tiled output equal the in-memory output to float32 precision when ``depth`` covers
the method's influence radius. ``flux_exact=True`` is the exception: its projection is solved by conjugate
gradients over the whole image, so tile by tile it is solved per block (each block then reproduces its
own input exactly through the forward model, which is the same constraint, but the least-change solution
differs slightly near block seams); the difference is measured in the tests and documented.
"""

from __future__ import annotations

from .restore_jobs.batch import (
    DEFAULT_MAX_MEMORY,
    HASH_KEY,
    BatchResult,
    FileResult,
    batch,
    batch_job,
    content_hash,
    expand_inputs,
    output_path,
    read_hash,
    restore_file,
)
from .restore_jobs.blocks import (
    DEFAULT_CHUNK,
    PathLike,
    RestoreParams,
    clear_cache,
    default_depth,
    file_sha256,
    network_normalization,
    resolve_flux_noise,
    resolve_for_image,
    resolve_sky_rms,
)
from .restore_jobs.stream import (
    FitsSection,
    TiledResult,
    _reset_peak_rss,  # noqa: F401  (not public; benchmarks/batch_scaling.py uses it)
    peak_rss,
    restore_fits_tiled,
    restore_fits_tiled_job,
)
from .restore_jobs.tiling import restore_dask

__all__ = [
    "RestoreParams",
    "content_hash",
    "file_sha256",
    "default_depth",
    "restore_dask",
    "FitsSection",
    "restore_fits_tiled_job",
    "restore_fits_tiled",
    "TiledResult",
    "output_path",
    "read_hash",
    "restore_file",
    "batch_job",
    "batch",
    "BatchResult",
    "FileResult",
    "expand_inputs",
    "clear_cache",
    "peak_rss",
    "HASH_KEY",
    # also module attributes before the split
    "DEFAULT_CHUNK",
    "DEFAULT_MAX_MEMORY",
    "PathLike",
    "network_normalization",
    "resolve_flux_noise",
    "resolve_for_image",
    "resolve_sky_rms",
]
