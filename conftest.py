"""Settings shared by the unit tests and the notebook runs (nbval).

When the course's data folder sits beside the repository (``../shared/data``,
as on the CI machine), point ``COMPANION_DATA`` at it before any kernel starts,
so chapters and tests read the real MNIST files instead of downloading them.
"""

import os
from pathlib import Path

_SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"

if _SHARED_DATA.is_dir():
    os.environ.setdefault("COMPANION_DATA", str(_SHARED_DATA))
os.environ.setdefault("MPLBACKEND", "Agg")
