"""Which calibration holds on OULAD's next period? Methods x the rows they are fitted on (issue 13).

Not a test. Needs a workspace with OULAD ingested (``propensity -w WS ingest dataset
configs/datasets/oulad.yaml``)::

    python benchmarks/oulad_recalibration.py --workspace WS [--json benchmarks/results/NAME.json]

Builds the training set and fits LightGBM as ``propensity train --config configs/train_oulad.yaml``
does (``assemble_training_set`` and ``fit_learned``, no MLflow), then refits only the calibration
on the booster's raw output, several ways, and reports the ECE on the 2014 test presentations
(``metrics.expected_calibration_error``, the repo's own) per presentation and overall:

- fitted on: every valid row (the shipped way), or only the valid rows of the latest valid
  cut-off (2013J: the latest labelled presentation, the period nearest the test);
- or walk-forward: each test cut-off on the latest cut-off labelled before it (valid or earlier
  test rows), as a model recalibrated on the newest labels would be;
- method: Platt (shift and stretch of the log-odds), isotonic (centred, as shipped), beta
  calibration (Kull et al. 2017: ``a ln p - b ln(1 - p) + c``, a logistic regression on two
  columns), temperature (a stretch only, no shift), and none (the raw booster).

The ranking does not depend on the calibration (every map is increasing): ROC-AUC is printed once.
Writes ``benchmarks/results/oulad_recalibration.json`` unless ``--json`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _logit(p):
    import numpy as np

    p = np.clip(np.asarray(p, dtype="float64"), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_map(method: str, raw, y):
    """A calibration map fitted on (raw, y): a function raw -> probability."""
    import numpy as np
    from scipy.optimize import minimize_scalar
    from sklearn.linear_model import LogisticRegression

    from propensity.pipelines.training.calibration import ProbabilityCalibrator

    if method in ("platt", "isotonic"):
        calibrator = ProbabilityCalibrator(method=method).fit(raw, y)
        return calibrator.transform
    if method == "beta":
        def design(p):
            p = np.clip(np.asarray(p, dtype="float64"), 1e-6, 1 - 1e-6)
            return np.column_stack([np.log(p), -np.log(1 - p)])
        model = LogisticRegression(C=1e6).fit(design(raw), y)
        return lambda p: model.predict_proba(design(p))[:, 1]
    if method == "temperature":
        z, yy = _logit(raw), np.asarray(y, dtype="float64")

        def loss(t):
            q = 1 / (1 + np.exp(-z / t))
            q = np.clip(q, 1e-12, 1 - 1e-12)
            return -np.mean(yy * np.log(q) + (1 - yy) * np.log(1 - q))
        t = minimize_scalar(loss, bounds=(0.05, 20), method="bounded").x
        return lambda p: 1 / (1 + np.exp(-_logit(p) / t))
    if method == "none":
        return lambda p: np.asarray(p, dtype="float64")
    raise ValueError(method)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "train_oulad.yaml")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "oulad_recalibration.json")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from propensity.features.config import load_feature_config
    from propensity.features.store import Workspace
    from propensity.pipelines.rules.config import load_rules
    from propensity.pipelines.training.calibration_shift import largest_gaps_by_account
    from propensity.pipelines.training.config import load_train_config
    from propensity.pipelines.training.dataset import assemble_training_set
    from propensity.pipelines.training.fit import fit_learned
    from propensity.pipelines.training.metrics import expected_calibration_error
    from propensity.pipelines.training.model import ModelConfig
    from propensity.pipelines.training.sampling import WEIGHT

    ws = Workspace(args.workspace)
    config = load_train_config(args.config)
    rules, feature_config = load_rules(config.rules), load_feature_config(config.features)
    con = ws.ibis_connection()
    ts = assemble_training_set(con, config, rules, feature_config, events=con.table("events"),
                               contacts=con.table("contacts"), outcomes=ws.table("outcomes"))
    frame = ts.frame
    is_train = (frame["split"] == "train").to_numpy()
    learned = fit_learned(frame, ts.feature_columns, ModelConfig.from_section(config.model), config.calibration,
                          weights=frame.loc[is_train, WEIGHT].to_numpy(),
                          rules=rules if config.rule_inputs else None)
    from propensity.pipelines.training.model import prepare_matrix

    X, _ = prepare_matrix(frame, ts.feature_columns, learned.categories)
    raw = learned.model.predict_raw(X)
    if learned.blend is not None:
        from propensity.pipelines.training.rule_blend import rule_score_of

        raw = learned.blend.apply(raw, rule_score_of(frame, rules))
    y = frame["label"].to_numpy()
    split = frame["split"].to_numpy()
    as_of = frame["as_of"].to_numpy()
    valid = split == "valid"
    latest = valid & (as_of == as_of[valid].max())
    test = split == "test"
    test_cutoffs = sorted(set(as_of[test]))
    fitted_on = {"every valid row": valid, "valid rows of the latest valid cut-off": latest}
    auc = float(roc_auc_score(y[test], raw[test]))
    valid_auc = float(roc_auc_score(y[valid], raw[valid]))
    rows = []
    print(f"OULAD day 60, {args.config.name}: {len(ts.feature_columns)} features; test ROC-AUC {auc:.4f} "
          f"(raw booster; valid {valid_auc:.4f}); valid {int(valid.sum()):,} rows, of them {int(latest.sum()):,} at the latest cut-off")
    print(f"  {'fitted on':<40} {'method':<12} {'test ECE':>8} " + " ".join(f"{str(c)[:10]:>22}" for c in test_cutoffs))
    for where_name, where in fitted_on.items():
        for method in ("platt", "isotonic", "beta", "temperature", "none"):
            mapping = fit_map(method, raw[where], y[where])
            p = np.asarray(mapping(raw), dtype="float64")
            per = []
            for c in test_cutoffs:
                part = test & (as_of == c)
                per.append({"as_of": str(c)[:10], "rows": int(part.sum()), "rate": float(y[part].mean()),
                            "mean_probability": float(p[part].mean()),
                            "ece": float(expected_calibration_error(y[part], p[part]))})
            ece = float(expected_calibration_error(y[test], p[test]))
            ece_valid = float(expected_calibration_error(y[valid], p[valid]))
            gaps = largest_gaps_by_account(frame[test].assign(probability=p[test]))
            rows.append({"fitted_on": where_name, "method": method, "test_ece": ece, "valid_ece": ece_valid,
                         "test_auc": float(roc_auc_score(y[test], p[test])), "by_cutoff": per,
                         "largest_gaps_by_account": gaps})
            cells = " ".join(f"{r['rate']:.3f}/{r['mean_probability']:.3f} {r['ece']:.4f}" for r in per)
            print(f"  {where_name:<40} {method:<12} {ece:8.4f} {cells}")
            if where_name == "every valid row" and method == config.calibration.method:
                print("    as shipped, largest gaps by account (rows: rate / mean probability, share of the gap): "
                      + "; ".join(f"{g['account_id']} ({g['rows']:,}): {g['rate']:.3f}/{g['mean_probability']:.3f} "
                                  f"{g['share_of_gap']:+.4f}" for g in gaps))
    # Walk-forward: each test cut-off recalibrated on the latest cut-off whose labels are all known by
    # then (as_of + horizon <= that cut-off), among the valid rows and the earlier test rows (never
    # train rows, which the booster has seen): what a model refreshed with the newest labels would do.
    horizon = np.timedelta64(int(config.horizon_days * 86_400), "s")
    held_out = valid | test
    walk = []
    for method in ("platt", "isotonic", "beta"):
        p = np.full(len(frame), np.nan)
        used = []
        for c in test_cutoffs:
            known = sorted({a for a in as_of[held_out] if a + horizon <= c})
            if not known:
                raise SystemExit(f"no labelled cut-off before {c}")
            fit_on = held_out & (as_of == known[-1])
            part = test & (as_of == c)
            p[part] = fit_map(method, raw[fit_on], y[fit_on])(raw[part])
            used.append({"as_of": str(c)[:10], "fitted_on": str(known[-1])[:10], "fit_rows": int(fit_on.sum()),
                         "rate": float(y[part].mean()), "mean_probability": float(p[part].mean()),
                         "ece": float(expected_calibration_error(y[part], p[part]))})
        ece = float(expected_calibration_error(y[test], p[test]))
        walk.append({"method": method, "test_ece": ece, "by_cutoff": used})
        cells = " ".join(f"{u['as_of']} on {u['fitted_on']} ({u['fit_rows']:,}): {u['rate']:.3f}/{u['mean_probability']:.3f} "
                         f"{u['ece']:.4f}" for u in used)
        print(f"  {'walk-forward (latest labelled cut-off)':<40} {method:<12} {ece:8.4f} {cells}")
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"  (per cut-off: rate / mean probability, ECE)\n  {load}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "benchmarks/oulad_recalibration.py",
                                     "config": str(args.config),
                                     "features": len(ts.feature_columns), "test_auc_raw": auc, "valid_auc_raw": valid_auc,
                                     "valid_rows": int(valid.sum()), "latest_valid_rows": int(latest.sum()),
                                     "variants": rows, "walk_forward": walk, "uptime": load}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
