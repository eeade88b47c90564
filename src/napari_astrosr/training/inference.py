"""Moved: :mod:`napari_astrosr.models.inference` (running and storing networks is not training). This name is
the same module object, so existing imports, attribute access and monkeypatching keep working.
"""

import sys

from ..models import inference as _moved

sys.modules[__name__] = _moved
