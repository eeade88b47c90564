"""User-facing errors and warnings.

Everything the user can fix (a bad file, a bad option) raises :class:`AstroSRError`
with a one-line message that names the file or argument and says what to do. The CLI
turns it into exit code 2; the napari widgets into a notification.
"""

from __future__ import annotations


class AstroSRError(Exception):
    """An error the user can act on; its message is shown as is, without a traceback."""


class AstroSRWarning(UserWarning):
    """Base class for the package's warnings."""


class NoSourcesWarning(AstroSRWarning):
    """Source detection found nothing; an empty table is returned."""


class WCSWarning(AstroSRWarning):
    """A header's WCS could not be used; the image is kept without it."""


class StoppedError(AstroSRError):
    """A long job was asked to stop before it produced a result."""
