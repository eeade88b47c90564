"""napari side: ``viewer.open`` on a broken .fits shows an error notification naming the
file, raises nothing and adds no layer (the reader returns napari's "nothing to add")."""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _generate import BLOCK, card, header_bytes, image_file  # noqa: E402

pytestmark = pytest.mark.gui
PLUGIN = "napari-astrosr"


def _bad_files(d: Path) -> dict[str, Path]:
    good = image_file(np.arange(64 * 64, dtype=np.float32).reshape(64, 64))
    huge = (
        header_bytes(
            [
                card("SIMPLE", True),
                card("BITPIX", -32),
                card("NAXIS", 2),
                card("NAXIS1", 500_000),
                card("NAXIS2", 500_000),
            ]
        )
        + b"\0" * BLOCK
    )
    neg = header_bytes(
        [card("SIMPLE", True), card("BITPIX", -32), card("NAXIS", 2), card("NAXIS1", -5), card("NAXIS2", 5)]
    )
    files = {
        "truncated": (d / "truncated.fits", good[: BLOCK + 3000]),
        "garbage": (d / "garbage.fits", np.random.default_rng(0).integers(0, 256, 6000, np.uint8).tobytes()),
        "terabyte": (d / "terabyte.fits.gz", gzip.compress(huge)),
        "negative": (d / "negative.fits", neg),
        "bitpix": (d / "bitpix.fits", image_file(np.ones((8, 8), np.float32), bitpix=24)),
    }
    for p, raw in files.values():
        p.write_bytes(raw)
    return {k: v[0] for k, v in files.items()}


@pytest.fixture
def notifications():
    from napari.utils.notifications import notification_manager

    got: list = []

    def collect(event):
        got.append(event.value if hasattr(event, "value") else event)

    notification_manager.notification_ready.connect(collect)
    yield got
    notification_manager.notification_ready.disconnect(collect)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "terabyte", "negative", "bitpix"])
def test_open_broken_file_notifies(make_napari_viewer, tmp_path, notifications, kind):
    from napari.utils.notifications import NotificationSeverity

    viewer = make_napari_viewer()
    p = _bad_files(tmp_path)[kind]
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    layers = viewer.open(str(p), plugin=PLUGIN)
    assert list(layers) == [] and len(viewer.layers) == 0
    errors = [n for n in notifications if n.severity == NotificationSeverity.ERROR]
    assert len(errors) == 1, [n.message for n in notifications]
    assert p.name in errors[0].message and "napari-astrosr" in errors[0].message
    assert "Traceback" not in errors[0].message and "\n" not in errors[0].message
    assert hashlib.sha256(p.read_bytes()).hexdigest() == digest


def test_open_good_after_bad_still_works(make_napari_viewer, tmp_path, notifications):
    viewer = make_napari_viewer()
    bad = _bad_files(tmp_path)["truncated"]
    good = tmp_path / "good.fits"
    good.write_bytes(image_file(np.ones((16, 16), np.float32)))
    viewer.open(str(bad), plugin=PLUGIN)
    layers = viewer.open(str(good), plugin=PLUGIN)
    assert len(layers) == 1 and layers[0].data.shape == (16, 16)
