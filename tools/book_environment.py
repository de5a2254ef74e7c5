"""A Sphinx extension of the book's own: the settings its notebook kernels run with.

``_config.yml`` loads it (``sphinx: local_extensions``), so ``make book`` and a
plain ``jupyter-book build .`` both get it. The kernels that execute the
chapters inherit this process's environment, and a built page is read long
after its cells ran, so training shows its progress as one line of text per
epoch (``COMPANION_PROGRESS=text``) rather than as a live widget that a static
page cannot show. In Jupyter and Colab, without this extension, the bar stays live.
``MPLBACKEND`` is dropped: with it set (to ``Agg``, say, as the tests set it) the
kernels would not use the inline backend and the pages would have no figures.
"""

from __future__ import annotations

import os

from sphinx.application import Sphinx


def setup(app: Sphinx) -> dict[str, object]:
    os.environ["COMPANION_PROGRESS"] = "text"
    os.environ.pop("MPLBACKEND", None)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
