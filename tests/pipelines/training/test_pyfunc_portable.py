"""A registered model loads and predicts where the repository is not (issue 11).

The model carries a copy of the package (MLflow ``code_paths``) and pins its third-party runtime
packages; a fresh venv that has only the model's own ``requirements.txt`` (what ``mlflow models
serve`` or ``spark_udf(env_manager="virtualenv")`` would build) must load it from an empty folder and
give the scorer's own predictions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

PREDICT = """
import sys, mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
import propensity
print("propensity from", propensity.__file__)
model.predict(pd.read_parquet(sys.argv[2])).to_parquet(sys.argv[3])
"""


def _download_model(world, folder: Path) -> Path:
    import mlflow

    from propensity.pipelines.training.tracking import configure_tracking

    configure_tracking(world.ws.path, None, world.config.mlflow.experiment)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{world.model_name}/{world.version}",
                                                    dst_path=str(folder)))


def test_the_model_carries_its_code_and_pins_only_what_it_imports(world, tmp_path):
    model = _download_model(world, tmp_path / "model")
    requirements = (model / "requirements.txt").read_text().split()
    names = {line.split("==")[0] for line in requirements}
    # propensity is not on PyPI: the model carries the package instead of requiring it
    assert "propensity" not in names and {"mlflow-skinny", "lightgbm", "scikit-learn", "pandas", "numpy"} <= names
    assert all("==" in line for line in requirements), requirements
    code = model / "code" / "propensity"
    assert (code / "__init__.py").is_file() and (code / "pipelines" / "training" / "scorer.py").is_file()
    assert (code / "configs" / "features.yaml").is_file()
    copied = {p.relative_to(code).parts[0] for p in code.iterdir()}
    assert copied <= {"__init__.py", "py.typed", "features", "pipelines", "configs"}, copied


def test_a_venv_with_only_the_models_requirements_loads_and_predicts_it_from_an_empty_folder(world, tmp_path):
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (make setup installs it into the venv)")
    from propensity import Project

    model = _download_model(world, tmp_path / "model")
    as_of = pd.Timestamp(world.result.test_scores["as_of"].iloc[0])
    from propensity.features.spine import spine_at
    from propensity.pipelines.explain.jobs import model_features

    project = Project(world.ws)
    scorer = project.model(world.version, world.model_name).pyfunc.unwrap_python_model().scorer
    con = world.ws.ibis_connection()
    # the model's input: its features as trained, the rules' columns (rule__*) included
    features = model_features(con, spine_at(con.table("events"), as_of, con.table("contacts")), scorer).head(300)
    rows = features[world.result.scorer.feature_names]
    rows.to_parquet(tmp_path / "rows.parquet")

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROPENSITY_", "MLFLOW_", "VIRTUAL_ENV", "PYTHONPATH"))}
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, env=env)
    python = venv / "bin" / "python"
    # pyarrow only to read and write this test's parquet files; it is not one of the model's needs
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(python), "-r", str(model / "requirements.txt"),
                    "pyarrow"], check=True, env=env, timeout=900)
    installed = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('propensity'))"],
                               capture_output=True, text=True, env=env, check=True)
    assert installed.stdout.strip() == "None", "the venv must not have propensity installed"

    empty = tmp_path / "empty"
    empty.mkdir()
    ran = subprocess.run([str(python), "-c", PREDICT, str(model), str(tmp_path / "rows.parquet"),
                          str(tmp_path / "out.parquet")], cwd=empty, capture_output=True, text=True, env=env,
                         timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert str(model / "code") in ran.stdout, ran.stdout
    predicted = pd.read_parquet(tmp_path / "out.parquet")
    expected = world.result.scorer.score(rows).reset_index(drop=True)
    pd.testing.assert_frame_equal(predicted, expected, check_exact=False, rtol=1e-12)
