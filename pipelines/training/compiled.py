"""Optional compiled trees for batch scoring (extra ``[fast]``: treelite + tl2cgen, and gcc).

LightGBM's own ``predict`` walks every tree for every row through its generic tree structure.
TL2cgen turns a model into C (nested ``if``s, one function per row) that gcc compiles into a
shared library. Compiled as one library, a few hundred trees make a function far larger than
the CPU's instruction cache, which left it at about LightGBM's speed (446-tree model: 25 CPU-s
per 1M rows for both). So the trees are compiled in blocks of ``TREES_PER_BLOCK``: each block's
library scores a chunk of rows while its code stays in cache, the blocks' raw margins are
summed, and LightGBM's own link (``sigmoid``) is applied once. Chunks go to one thread per core
(the native call releases the GIL), which measured faster than TL2cgen's own OpenMP threads
on each small call. Measured on that model, 2 cores: ~7 CPU-s per 1M rows, ~270k rows/s;
probabilities equal to LightGBM's to ~1e-15 (only the summation order differs). Nothing here
is hand-written tree code: treelite reads LightGBM's model text, so each block is a slice of
the model itself.

Opt in with ``PROPENSITY_COMPILED_TREES=1`` (or ``propensity score --compiled``): the MLflow
pyfunc then compiles when it loads (seconds); libraries are cached under
``$PROPENSITY_CACHE_DIR`` (default ``~/.cache/propensity``), keyed by a hash of each block's
model text, so later loads of the same model reuse them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from propensity.pipelines.training.lgbm import lgb

__all__ = [
    "ENV_VAR",
    "compiled_predictor",
    "compiled_trees_requested",
    "compiled_trees_unavailable",
    "default_cache_dir",
]

logger = logging.getLogger(__name__)

ENV_VAR = "PROPENSITY_COMPILED_TREES"
CACHE_ENV_VAR = "PROPENSITY_CACHE_DIR"
# Trees per compiled library: few enough that a block's code stays in the instruction cache
# while it scores a chunk, enough that TL2cgen's per-row copy of the features into its own
# layout (once per block) stays small. 25, 50 and 100 measured 7.3, 7.0 and 8.8 CPU-s per 1M
# rows on the 446-tree model, 13.8, 11.2 and 11.8 on the 683-tree OULAD one.
TREES_PER_BLOCK = 50
# Rows per native call: one chunk is copied into a DMatrix once and read by every block.
_CHUNK_ROWS = 16_384
_INSTALL_HINT = "compiled trees need the [fast] extra: pip install 'propensity[fast]' (treelite, tl2cgen)"
_NO_COMPILER = "compiled trees need a C compiler: gcc was not found on PATH (apt install gcc)"


def compiled_trees_requested(env: dict[str, str] | None = None) -> bool:
    """Whether the user asked for compiled trees (``PROPENSITY_COMPILED_TREES`` is 1/true/yes/on)."""
    value = (env if env is not None else os.environ).get(ENV_VAR, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def compiled_trees_unavailable() -> str | None:
    """Why compiled trees cannot be built here (missing extra or compiler), or None."""
    if importlib.util.find_spec("tl2cgen") is None or importlib.util.find_spec("treelite") is None:
        return _INSTALL_HINT
    if shutil.which("gcc") is None:
        return _NO_COMPILER
    return None


def default_cache_dir() -> Path:
    """``$PROPENSITY_CACHE_DIR``, else ``$XDG_CACHE_HOME/propensity``, else ``~/.cache/propensity``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "propensity"


def compiled_predictor(
    booster: lgb.Booster,
    best_iteration: int | None = None,
    *,
    cache_dir: str | Path | None = None,
    n_jobs: int | None = None,
    trees_per_block: int = TREES_PER_BLOCK,
) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``rows -> probability`` equal (to ~1e-15) to
    ``booster.predict(rows, num_iteration=best_iteration)`` for a binary LightGBM model.

    Raises ``ImportError`` with the install hint when treelite/tl2cgen are missing,
    ``RuntimeError`` naming the compiler when gcc is not found, and ``ValueError`` for a model
    that is not a single-output binary classifier.
    """
    try:
        import tl2cgen
        import treelite
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    total = booster.current_iteration()
    iterations = min(best_iteration, total) if best_iteration and best_iteration > 0 else total
    texts = [booster.model_to_string(start_iteration=start, num_iteration=min(trees_per_block, iterations - start))
             for start in range(0, iterations, trees_per_block)]
    if not texts:
        raise ValueError("the model has no trees to compile")
    scale = _sigmoid_scale(texts[0])  # every block's text carries the model's header
    folder = Path(cache_dir) if cache_dir else default_cache_dir() / "compiled-trees"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = n_jobs or os.cpu_count() or 1
    libraries = [folder / f"trees-{hashlib.sha256(t.encode('utf-8')).hexdigest()[:24]}{_library_suffix()}"
                 for t in texts]
    missing = [(text, library) for text, library in zip(texts, libraries) if not library.exists()]
    if missing:
        _compile_blocks(missing, folder, jobs, tl2cgen, treelite)
    predictors = [tl2cgen.Predictor(str(library), nthread=1) for library in libraries]

    def margin_of(rows: np.ndarray) -> np.ndarray:
        chunk = tl2cgen.DMatrix(np.ascontiguousarray(rows), dtype="float64")
        margin = np.zeros(len(rows), dtype=np.float64)
        for predictor in predictors:
            margin += predictor.predict(chunk, pred_margin=True).reshape(-1)
        return margin

    def predict(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float64)
        if len(rows) == 0:
            return np.empty(0, dtype=np.float64)
        chunks = [rows[start : start + _CHUNK_ROWS] for start in range(0, len(rows), _CHUNK_ROWS)]
        if len(chunks) <= 1:
            margin = margin_of(rows)
        else:
            with ThreadPoolExecutor(max_workers=min(jobs, len(chunks))) as pool:
                margin = np.concatenate(list(pool.map(margin_of, chunks)))
        # LightGBM's binary link: 1 / (1 + exp(-sigmoid * margin)); exp overflowing to inf gives 0, as there
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-scale * margin))

    return predict


def _sigmoid_scale(model_text: str) -> float:
    """The ``sigmoid`` parameter of a binary model's objective line (``objective=binary sigmoid:1``)."""
    header = model_text.split("\nTree=", 1)[0]
    objective = re.search(r"^objective=(.*)$", header, flags=re.MULTILINE)
    classes = re.search(r"^num_tree_per_iteration=(\d+)$", header, flags=re.MULTILINE)
    if objective is None or not objective.group(1).startswith("binary") or (classes and classes.group(1) != "1"):
        found = objective.group(1) if objective else "none"
        raise ValueError(f"compiled trees support binary LightGBM models only; this model's objective is {found!r}")
    scale = re.search(r"sigmoid:([0-9.eE+-]+)", objective.group(1))
    return float(scale.group(1)) if scale else 1.0


def _compile_blocks(blocks: list[tuple[str, Path]], folder: Path, jobs: int, tl2cgen, treelite) -> None:
    """Compile each ``(LightGBM model text, library path)``; C code first, then one gcc per core.

    Each library is built in its own temporary folder and renamed into place, so two processes
    compiling the same model at once never load a half-written file.
    """
    if shutil.which("gcc") is None:
        raise RuntimeError(_NO_COMPILER)
    with contextlib.ExitStack() as stack:
        builds = [Path(stack.enter_context(tempfile.TemporaryDirectory(dir=folder))) for _ in blocks]
        # TL2cgen's native log lines reach Python's print() only on the thread that loaded it, so
        # the C code is generated here, with stdout captured; gcc then runs on worker threads.
        # No quantisation: it re-bins every feature of every row in each block, which costs more
        # than the float comparisons it saves once the trees are split into blocks.
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            for (text, _), build in zip(blocks, builds):
                (build / "model.txt").write_text(text, encoding="utf-8")  # treelite parses the text itself
                model = treelite.frontend.load_lightgbm_model(build / "model.txt")
                tl2cgen.generate_c_code(model, build / "c", {"quantize": 0})
        logger.debug("tl2cgen: %s", log.getvalue().strip())

        def build_one(build: Path) -> str:
            return tl2cgen.create_shared("gcc", build / "c", nthread=1, long_build_time_warning=False)

        with ThreadPoolExecutor(max_workers=min(jobs, len(blocks))) as pool:
            built = list(pool.map(build_one, builds))
        for path, (_, library) in zip(built, blocks):
            os.replace(path, library)


def _library_suffix() -> str:
    return {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
