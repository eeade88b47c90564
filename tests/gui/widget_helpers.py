"""Helpers shared by the widget tests (not a test module)."""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import NotificationSeverity, notification_manager


def star_image(shape=(48, 56), *, n=12, sigma=1.3, seed=1, sky=5.0, noise=0.5) -> np.ndarray:
    """A seeded synthetic star field (Gaussian stars on a flat noisy sky), float32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, sky, dtype=np.float64)
    for _ in range(n):
        y0, x0 = rng.uniform(4, shape[0] - 4), rng.uniform(4, shape[1] - 4)
        f = rng.uniform(200, 2000)
        img += f / (2 * np.pi * sigma**2) * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * sigma**2))
    img += rng.normal(0, noise, shape)
    return img.astype(np.float32)


class Notes:
    """Collect napari notifications dispatched during a test."""

    def __init__(self) -> None:
        self.start = len(notification_manager.records)

    @property
    def all(self):
        return notification_manager.records[self.start :]

    def errors(self) -> list[str]:
        return [n.message for n in self.all if n.severity == NotificationSeverity.ERROR]

    def infos(self) -> list[str]:
        return [n.message for n in self.all if n.severity == NotificationSeverity.INFO]

    def warnings(self) -> list[str]:
        return [n.message for n in self.all if n.severity == NotificationSeverity.WARNING]


def wait_idle(qtbot, panel, timeout=30_000) -> None:
    """Wait until a JobPanel has no job running."""
    qtbot.waitUntil(lambda: not panel.busy, timeout=timeout)


def restore_widget(viewer, qtbot):
    """A RestoreWidget with its method list loaded (it loads in a thread)."""
    from napari_astrosr._napari.widgets.restore import RestoreWidget

    w = RestoreWidget(viewer)
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: w.methods_ready, timeout=60_000)
    return w
