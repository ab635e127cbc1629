"""Each workspace logs to its own MLflow store, also when several are used in one process."""

from propensity.pipelines.training.tracking import configure_tracking


def test_a_second_workspace_in_the_same_process_gets_its_own_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = configure_tracking(tmp_path / "a", None, "exp")
    second = configure_tracking(tmp_path / "b", None, "exp")
    assert first.endswith("/a/mlflow.db")
    assert second.endswith("/b/mlflow.db")


def test_the_users_own_tracking_uri_still_wins(tmp_path, monkeypatch):
    user_store = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    (tmp_path / "shared").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", user_store)
    assert configure_tracking(tmp_path / "ws", None, "exp") == user_store
