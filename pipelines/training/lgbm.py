"""LightGBM as the project imports it: every module takes ``lgb`` from here.

``import lightgbm`` first imports scikit-learn (``lightgbm.compat``, for LightGBM's own
scikit-learn wrappers ``LGBMClassifier`` and its stratified ``cv``), and scikit-learn imports
``scipy.stats``: about 1 s of CPU, half of a cold ``propensity explain``. The project uses none
of those wrappers, only ``Booster``, ``Dataset``, ``train`` and the callbacks, which do not touch
scikit-learn. So when scikit-learn is not loaded yet, LightGBM is imported with it hidden;
scikit-learn itself stays importable afterwards (training imports it for its metrics and
calibration) and works as usual. What changes in such a process: ``lgb.LGBMClassifier`` and
``lgb.cv(stratified=True)`` are LightGBM's no-scikit-learn versions (they raise when used), so
use scikit-learn's own API for those, or import scikit-learn before this module.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder

__all__ = ["lgb"]


class _HideScikitLearn(MetaPathFinder):
    """An import finder under which ``sklearn`` (and its submodules) cannot be found."""

    def find_spec(self, name, path=None, target=None):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden while LightGBM is imported)", name=name)


def _import_lightgbm():
    if "lightgbm" in sys.modules or "sklearn" in sys.modules:
        import lightgbm

        return lightgbm
    finder = _HideScikitLearn()
    sys.meta_path.insert(0, finder)
    try:
        import lightgbm
    finally:
        sys.meta_path.remove(finder)
    return lightgbm


lgb = _import_lightgbm()
