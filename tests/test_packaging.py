"""`propensity` installs as one package and runs from any folder, the way users install it.

The quick tests check the package layout against pyproject.toml and that a stray ``features/``
or ``pipelines/`` folder in the working directory changes nothing. The slow one builds the wheel,
installs it (not editable) into a fresh virtual environment and, from an empty folder, runs the
demo, a copied and edited training config, ``score``, ``explain`` and a walkthrough notebook.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import propensity
from propensity.pipelines.shipped import (
    ShippedConfigError,
    copy_shipped_configs,
    shipped_config,
    shipped_configs_dir,
)
from propensity.pipelines.training.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# Importing either stray package fails loudly, so a test passes only if nothing imports it.
STRAY = 'raise ImportError("the stray {name}/ folder of the working directory was imported")\n'


def _package_folders() -> set[str]:
    """Every folder that must install: Python packages under features/ and pipelines/, and every
    folder holding shipped data (configs, templates)."""
    found = {"propensity"}
    for top in ("features", "pipelines", "configs"):
        for folder in [ROOT / top, *(p for p in (ROOT / top).rglob("*") if p.is_dir())]:
            if "__pycache__" in folder.parts:
                continue
            if any(folder.glob("*.py")) or any(folder.glob("*.yaml")) or any(folder.glob("*.j2")):
                found.add("propensity." + ".".join(folder.relative_to(ROOT).parts))
    return found


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed == _package_folders()


def test_nothing_installs_a_top_level_features_or_pipelines_module():
    listed = PYPROJECT["tool"]["setuptools"]["packages"]
    assert all(name == "propensity" or name.startswith("propensity.") for name in listed)
    assert PYPROJECT["project"]["scripts"]["propensity"].startswith("propensity.")


def test_the_package_has_a_version_and_the_cli_prints_it():
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", propensity.__version__)
    done = subprocess.run([sys.executable, "-m", "propensity.pipelines.cli", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"propensity {propensity.__version__}"


def test_a_stray_features_folder_in_the_working_directory_does_not_shadow_the_package(tmp_path):
    for name in ("features", "pipelines"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(STRAY.format(name=name))
    # `python -m` puts the working directory first on sys.path: the strongest case of shadowing
    code = ("import propensity.features.store, propensity.pipelines.jobs, propensity.pipelines.rules.score;"
            "print(propensity.features.store.__file__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not Path(done.stdout.strip()).is_relative_to(tmp_path)
    cli = subprocess.run([sys.executable, "-m", "propensity.pipelines.cli", "-w", "ws", "configs", "list"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "train.yaml" in cli.stdout


def test_shipped_configs_are_package_data_and_their_relative_paths_resolve():
    config = load_train_config(shipped_config("train.yaml"))
    assert config.rules == shipped_configs_dir() / "rules" / "saas.yaml"
    with pytest.raises(ShippedConfigError, match="no shipped config 'nope.yaml'.*train.yaml"):
        shipped_config("nope.yaml")


def test_copied_configs_load_from_their_new_folder_and_a_second_copy_refuses_to_overwrite(tmp_path):
    written = copy_shipped_configs(tmp_path / "cfg")
    assert {p.relative_to(tmp_path / "cfg").as_posix() for p in written} >= {"train.yaml", "rules/saas.yaml"}
    config = load_train_config(tmp_path / "cfg" / "train.yaml")
    assert config.rules == tmp_path / "cfg" / "rules" / "saas.yaml"  # the copy, not the package's file
    (tmp_path / "cfg" / "train.yaml").write_text("edited\n")
    with pytest.raises(ShippedConfigError, match="already exist"):
        copy_shipped_configs(tmp_path / "cfg")
    assert (tmp_path / "cfg" / "train.yaml").read_text() == "edited\n"  # refused before writing anything


def _run(args: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_runs_its_defaults_from_an_empty_folder(tmp_path):
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (make setup installs it into the venv)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROPENSITY_", "MLFLOW_", "VIRTUAL_ENV"))}
    _run([uv, "build", "--wheel", "--quiet", "--out-dir", str(tmp_path / "dist"), str(ROOT)], tmp_path, env)
    wheel = next((tmp_path / "dist").glob("propensity-*.whl"))
    venv = tmp_path / "venv"
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], tmp_path, env)
    python, cli = venv / "bin" / "python", venv / "bin" / "propensity"
    # the test extra brings nbclient and ipykernel for the notebook; resolved from the wheel's metadata
    # bytecode compiled at install, as pip does by default (uv does not): with PYTHONDONTWRITEBYTECODE
    # set, each command below would compile its imports from source again
    _run([uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python), f"{wheel}[dev]"],
         tmp_path, env)

    work = tmp_path / "empty"
    work.mkdir()
    for name in ("features", "pipelines"):  # a data-science project's own folders
        (work / name).mkdir()
        (work / name / "__init__.py").write_text(STRAY.format(name=name))
    env = {**env, "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}", "PROPENSITY_CACHE_DIR": str(tmp_path / "cache")}

    installed = _run([str(python), "-c", "import propensity; print(propensity.__file__)"], work, env)
    assert Path(installed.stdout.strip()).is_relative_to(venv), "the wheel, not the source tree, must be imported"
    demo = _run([str(cli), "demo", "--contacts", "2000"], work, env)
    assert (work / "propensity-workspace" / "reports" / "compare.html").is_file(), demo.stdout[-2000:]

    # a user's edited copy of the shipped configs: LightGBM even on the small demo world
    _run([str(cli), "configs", "copy", "my-configs"], work, env)
    train_config = work / "my-configs" / "train_demo.yaml"
    train_config.write_text(train_config.read_text() + "points_only_below: 100\n")
    train = _run([str(cli), "train", "--config", str(train_config.relative_to(work))], work, env)
    version = re.search(r"registered version (\d+)", train.stdout)
    assert version, train.stdout[-3000:]

    _run([str(cli), "score", "--model", version.group(1), "--as-of", "2025-06-01", "--out", "learned.csv"], work, env)
    scored = (work / "learned.csv").read_text().splitlines()
    assert scored[0].startswith("contact_id,as_of,probability,learned_score") and len(scored) > 1000
    contact = scored[1].split(",")[0]
    explained = _run([str(cli), "explain", contact, "--model", version.group(1), "--json"], work, env)
    assert json.loads(explained.stdout)["contact_id"] == contact

    notebook = work / "01-quickstart.ipynb"
    shutil.copyfile(ROOT / "notebooks" / "01-quickstart.ipynb", notebook)
    run_notebook = ("import nbformat, nbclient, sys; nb = nbformat.read(sys.argv[1], as_version=4); "
                    "nbclient.NotebookClient(nb, timeout=600, kernel_name='python3').execute(); print('ok')")
    _run([str(python), "-c", run_notebook, str(notebook)], work, env, timeout=900)


def test_every_pipelines_module_has_a_place_in_the_layers_contract():
    """A new module or folder under pipelines/ must be put in a layer (pyproject's import-linter
    contract); an unlisted one would be free to import anything."""
    (contract,) = [c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    placed = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    present = {p.stem for p in (ROOT / "pipelines").glob("*.py") if p.stem != "__init__"}
    present |= {p.name for p in (ROOT / "pipelines").iterdir() if (p / "__init__.py").is_file()}
    assert present == placed
