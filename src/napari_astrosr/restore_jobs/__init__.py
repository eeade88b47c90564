"""The restore jobs beyond one in-memory image, one module per job (split from ``napari_astrosr.batch``).

- :mod:`.blocks`: the tiling engine (overlapping blocks of a dask array, each restored by a given
  function), :class:`~.blocks.RestoreParams`, the per-worker model cache and the whole-image choices made
  once before tiling. Imports no job, so ``restoration.restore`` can use it for dask input.
- :mod:`.tiling`: :func:`~.tiling.restore_dask`, the engine bound to ``restoration.restore``.
- :mod:`.stream`: :func:`~.stream.restore_fits_tiled_job`, a FITS file larger than memory streamed
  section by section.
- :mod:`.batch`: :func:`~.batch.batch_job`, many files on a Dask cluster with a content-hash cache.

Not named ``restore``: importing a subpackage ``napari_astrosr.restore`` would replace the public
``napari_astrosr.restore`` function on the package. Nothing is imported here, so importing one module
loads only what it needs.
"""
