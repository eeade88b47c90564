"""FitsImage / result arrays / source tables <-> napari layer data.

This module and ``core/catalogs.py`` are the only places that convert between table
(x, y) order and napari's (y, x) order.

World coordinates: an input image layer has scale 1 and translate 0, so world = pixel
index. A layer whose pixels are ``f`` times finer (an x``f`` super-resolution output)
gets scale ``1/f`` and a translate of ``-(1 - 1/f)/2`` so that its pixels tile the input
pixels exactly (input pixel 0 spans world [-0.5, 0.5]; output pixels 0 and 1 span
[-0.5, 0] and [0, 0.5]).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..core.display import zscale_limits
from ..core.fits_io import FitsImage


def full_resolution(data: Any) -> Any:
    """Level 0 of multiscale layer data (the data itself otherwise).

    ``np.asarray`` of napari's ``MultiScaleData`` gives the *coarsest* level, so every
    consumer of a layer's pixels (job inputs, File > Save) goes through this first.
    """
    if isinstance(data, (list, tuple)) or getattr(data, "shapes", None) is not None:
        return data[0]
    return data


def image_layer_tuple(img: FitsImage, *, name: Optional[str] = None) -> tuple[np.ndarray, dict, str]:
    """A napari LayerDataTuple for an image read from FITS.

    The metadata holds ``header``, ``wcs`` (or None), ``bunit``, ``path`` (plus ``headers``
    for a stack); contrast limits are zscale limits of the data; colormap grey.
    """
    lo, hi = zscale_limits(img.data)
    kwargs: dict[str, Any] = {
        "name": name or img.name or "image",
        "metadata": dict(img.metadata),
        "contrast_limits": (lo, hi),
        "colormap": "gray",
        "interpolation2d": "nearest",
    }
    return img.data, kwargs, "image"


def _layer_geometry(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    scale = np.asarray(getattr(layer, "scale", None) if layer is not None else None, dtype=float)
    translate = np.asarray(getattr(layer, "translate", None) if layer is not None else None, dtype=float)
    return scale, translate


def result_layer_kwargs(
    source_layer: Any,
    result_data: np.ndarray,
    *,
    scale_factor: float,
    name: str,
    wcs: Any = None,
    header: Any = None,
    contrast_limits: Optional[tuple[float, float]] = None,
) -> dict[str, Any]:
    """Keyword arguments for ``viewer.add_image(result_data, **kw)`` overlaying ``source_layer``.

    Parameters
    ----------
    source_layer
        The napari Image layer the result was computed from (2-D or a stack).
    result_data
        The result array; its last two axes are the image plane.
    scale_factor
        Output pixels per input pixel along each axis (2 for x2 SR; 1 for same-size
        restoration; 0.5 for a x2 downsample).
    name
        Layer name (convention: ``"<input> [<method>]"``).
    wcs, header
        The result's WCS and header. Default header: the source layer's. Default WCS: the
        source's when ``scale_factor == 1``, else None (a resampled grid needs its own WCS,
        e.g. ``core.resample.scale_wcs``).
    contrast_limits
        Limits computed beforehand (in a worker); default: zscale of ``result_data``.

    Returns
    -------
    dict
        ``name``, ``scale``, ``translate`` (aligned in world coordinates), ``metadata``
        (header, wcs, bunit, source layer name, scale factor), ``contrast_limits``
        (zscale of the result) and the source's colormap.
    """
    if scale_factor <= 0:
        raise ValueError(f"scale_factor must be > 0, got {scale_factor}")
    result_data = np.asarray(result_data)
    src_meta = dict(getattr(source_layer, "metadata", {}) or {})
    ndim = result_data.ndim
    scale, translate = _layer_geometry(source_layer)
    if scale.ndim == 0 or scale.size == 0:
        scale, translate = np.ones(ndim), np.zeros(ndim)
    # match dimensionality (e.g. a 2-D result from one plane of a stack): keep the last axes
    if scale.size >= ndim:
        scale, translate = scale[-ndim:].copy(), translate[-ndim:].copy()
    else:
        scale = np.concatenate([np.ones(ndim - scale.size), scale])
        translate = np.concatenate([np.zeros(ndim - translate.size), translate])
    f = float(scale_factor)
    new_scale, new_translate = scale.copy(), translate.copy()
    new_scale[-2:] = scale[-2:] / f
    new_translate[-2:] = translate[-2:] - scale[-2:] * (1.0 - 1.0 / f) / 2.0
    lo, hi = zscale_limits(result_data) if contrast_limits is None else contrast_limits
    metadata = {
        "header": header if header is not None else src_meta.get("header"),
        "wcs": wcs if wcs is not None else (src_meta.get("wcs") if f == 1 else None),
        "bunit": src_meta.get("bunit"),
        "path": None,
        "source_layer": getattr(source_layer, "name", None),
        "scale_factor": f,
    }
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": tuple(new_scale),
        "translate": tuple(new_translate),
        "metadata": metadata,
        "contrast_limits": (lo, hi),
        "interpolation2d": "nearest",
    }
    cmap = getattr(source_layer, "colormap", None)
    if cmap is not None:
        kwargs["colormap"] = cmap
    return kwargs


def overlay_colormap() -> Any:
    """Transparent at zero, then cyan to yellow: an overlay that shows over a grey image
    (napari uses the colormap's alpha with ``translucent`` blending).
    """
    from napari.utils.colormaps import Colormap

    colors = [[0.0, 0.9, 1.0, 0.0], [0.0, 0.9, 1.0, 0.45], [1.0, 0.85, 0.0, 0.8], [1.0, 1.0, 0.3, 0.95]]
    return Colormap(
        colors=colors, controls=[0.0, 0.03, 0.5, 1.0], name="astrosr_overlay", display_name="overlay (cyan-yellow)"
    )


def overlay_limits(data: np.ndarray) -> tuple[float, float]:
    """(0, 99.5th percentile of the positive values) of a non-negative map; (0, 1) if none."""
    a = np.asarray(data)
    pos = a[np.isfinite(a) & (a > 0)]
    hi = float(np.percentile(pos, 99.5)) if pos.size else 1.0
    return (0.0, hi if hi > 0 else 1.0)


def overlay_layer_kwargs(data: np.ndarray, *, limits: Optional[tuple[float, float]] = None) -> dict[str, Any]:
    """Colormap, blending and contrast limits for a non-negative map drawn over an image
    (flux map): zero transparent, limits :func:`overlay_limits` (or ``limits``, computed
    beforehand in a worker).
    """
    return {
        "colormap": overlay_colormap(),
        "blending": "translucent",
        "opacity": 1.0,
        "contrast_limits": overlay_limits(data) if limits is None else tuple(limits),
        "gamma": 0.5,
        "interpolation2d": "linear",
    }


def sources_to_points(
    table: Any,
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    translate: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, Any]:
    """Points-layer data and features from a source table with 0-based ``x``, ``y`` columns.

    Parameters
    ----------
    table
        astropy Table/QTable (or anything with ``x``/``y`` columns and ``colnames``).
    scale, translate
        (y, x) scale and translate of the image layer the positions refer to; the
        returned coordinates are world coordinates, so the Points layer needs no
        scale/translate of its own (pass ``layer.scale[-2:]``, ``layer.translate[-2:]``).

    Returns
    -------
    (data, features)
        ``data``: (N, 2) float array of (y, x) world coordinates; ``features``: a pandas
        DataFrame with one row per source and every 1-D column of the table (units dropped).
    """
    import pandas as pd

    n = len(table)
    if n == 0:
        return np.zeros((0, 2)), pd.DataFrame({c: [] for c in getattr(table, "colnames", [])})
    x = np.asarray(getattr(table["x"], "value", table["x"]), dtype=float)
    y = np.asarray(getattr(table["y"], "value", table["y"]), dtype=float)
    sy, sx = (float(v) for v in scale)
    ty, tx = (float(v) for v in translate)
    data = np.column_stack([y * sy + ty, x * sx + tx])
    cols: dict[str, Any] = {}
    for c in getattr(table, "colnames", []):
        col = table[c]
        values = np.asarray(getattr(col, "value", col))
        if values.ndim == 1 and len(values) == n:
            cols[c] = values
    return data, pd.DataFrame(cols)
