"""What limits the learned model on the signal world: the features, or what only the oracle knows?

Not a test. Run after ``quality_bench.py --world signals`` has built the world's workspace::

    python benchmarks/signals_ceiling.py --features configs/features.yaml benchmarks/worlds/features_before_13.yaml

On the same training set (``configs/train.yaml``'s grid and split), one fixed LightGBM (no search,
early stopping on valid) is fitted on: each feature table given; the exact terms of the world's
hidden hazard at each cut-off (decayed pricing and reports, login days in 14, seats x size,
integration, credit days, fit: what a perfect feature set would hold); and both. It prints valid
and test ROC-AUC, and the AUC of the exact current hazard itself. The gap between the hidden-state
model and the truth is what no feature table can close (the oracle knows the hidden evaluating
state and activity level that drive the window's future events); the gap between a feature
table and the hidden-state model is what features still miss.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
PARAMS = {"objective": "binary", "learning_rate": 0.03, "num_leaves": 15, "min_data_in_leaf": 100,
          "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
          "verbose": -1, "seed": 0, "num_threads": 2, "deterministic": True, "force_row_wise": True}


def hidden_state(world, frame: pd.DataFrame) -> pd.DataFrame:
    """The hazard's exact terms for each (contact, as_of) row of ``frame``."""
    from propensity.pipelines.synthetic_signals import _State

    latent, start = world.latent, pd.Timestamp(world.config.start)
    number = {f"s{i:06d}": i for i in range(world.config.contacts)}
    day = ((frame["as_of"] - start) / pd.Timedelta(days=1)).astype(int).to_numpy()
    who = frame["contact_id"].map(number).to_numpy()
    out = np.zeros((len(frame), 9))
    state = _State((world.config.contacts,))
    fit, big = latent["fit_logit"].to_numpy(), latent["big"].to_numpy()
    for d in range(day.max() + 1):
        rows = np.flatnonzero(day == d)
        if len(rows):
            c = who[rows]
            out[rows] = np.column_stack([
                state.pricing[c], state.report[c], state.logins.sum(0)[c], (state.seats.sum(0) * big)[c],
                state.integrated[c], state.credit_days[c], fit[c], big[c],
                state.hazard(fit, big, world.config.baseline_logit)[c]])
        state.add_day(world.counts[d])
    names = ["pricing", "report", "logins14", "seats30_big", "integrated", "credit_days", "fit", "big", "hazard"]
    return pd.DataFrame(out, columns=names, index=frame.index)


def fit_auc(matrix, y, split) -> tuple[float, float, int]:
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    tr, va, te = split == "train", split == "valid", split == "test"
    booster = lgb.train(PARAMS, lgb.Dataset(matrix[tr], y[tr]), 3000, valid_sets=[lgb.Dataset(matrix[va], y[va])],
                        callbacks=[lgb.early_stopping(100, verbose=False)])
    return (roc_auc_score(y[va], booster.predict(matrix[va])), roc_auc_score(y[te], booster.predict(matrix[te])),
            booster.best_iteration)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", nargs="+", type=Path, default=[REPO / "configs" / "features.yaml"])
    ap.add_argument("--contacts", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/propensity-quality-bench"))
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    from sklearn.metrics import roc_auc_score

    from propensity.features.config import load_feature_config
    from propensity.features.store import Workspace
    from propensity.pipelines.rules import load_rules
    from propensity.pipelines.synthetic_signals import SignalWorldConfig, generate_signal_world
    from propensity.pipelines.training.config import load_train_config
    from propensity.pipelines.training.dataset import assemble_training_set
    from propensity.pipelines.training.model import prepare_matrix

    folder = args.workdir / f"world_signals_{args.contacts}x180_s{args.seed}" / "ws"
    if not folder.exists():
        raise SystemExit(f"no workspace at {folder}: run quality_bench.py --world signals first")
    ws = Workspace(folder)
    con = ws.ibis_connection()
    world = generate_signal_world(SignalWorldConfig(contacts=args.contacts, seed=args.seed))
    config = load_train_config(REPO / "configs" / "train.yaml").model_copy(
        update={"rules": REPO / "benchmarks" / "worlds" / "signals_rules.yaml"})
    hidden = None
    for path in args.features:
        ts = assemble_training_set(con, config, load_rules(config.rules), load_feature_config(path),
                                   events=con.table("events"), contacts=con.table("contacts"),
                                   outcomes=ws.table("outcomes"))
        frame, y, split = ts.frame, ts.frame["label"].to_numpy(), ts.frame["split"].to_numpy()
        if hidden is None:
            hidden = hidden_state(world, frame)
            te = split == "test"
            print(f"{len(frame):,} rows, {int(y[split == 'train'].sum()):,} training positives, "
                  f"{int(y[te].sum())} test positives")
            print(f"  {'exact current hazard (a score, no fit)':<52} test {roc_auc_score(y[te], hidden['hazard'][te]):.4f}")
            va, te_, n = fit_auc(hidden.drop(columns="hazard").to_numpy(), y, split)
            print(f"  {'LightGBM on the hidden hazard terms':<52} valid {va:.4f} test {te_:.4f} ({n} trees)")
        matrix, _ = prepare_matrix(frame, ts.feature_columns)
        va, te_, n = fit_auc(matrix, y, split)
        label = f"LightGBM on {path.name} ({len(ts.feature_columns)} features)"
        print(f"  {label:<52} valid {va:.4f} test {te_:.4f} ({n} trees)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
