"""Do the explanation groups rank as the generator's true drivers do? (issue 13, explanations)

Not a test. Needs a model saved by ``benchmarks/quality_bench.py`` on the SaaS world (it writes
``<workdir>/scorer_<contacts>x<days>_s<seed>`` with the test rows' features)::

    python benchmarks/quality_bench.py --contacts 20000 --workdir /tmp/qb
    python benchmarks/explain_truth.py --contacts 20000 --workdir /tmp/qb

On the test rows it sets beside each other, per explanation group (explain/groups.py, the
type-agnostic features spread by explain/spread.py):

- ``shap``: mean |group SHAP| of the learned model (log-odds of the 30-day probability);
- ``truth_centred``: mean |c_g - mean(c_g)| of the driver's true term c_g of the hidden daily
  log-hazard (synthetic/contributions.py). SHAP values are relative to the model's average, so
  for an additive truth the matching quantity is the centred term, in the same log-odds units
  (for rare events logit(30-day p) is about log 30 + logit(daily hazard));
- ``truth_raw``: mean |c_g| not centred (what a naive reading of the weights gives);
- ``oracle_model``: mean |group SHAP| of a LightGBM fitted to logit(true 30-day probability) on the
  same features (half the rows, explained on the other half): what an ideal model that reads only
  these columns would attribute, hidden intent included.

and Spearman's rho of ``shap`` with each, over the groups that carry a true driver (event types
and attributes; also the event types and the attributes apart, and the event types against their
per-unit hidden weights |beta_k|, which are not contributions). Writes ``benchmarks/results/explain_truth.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _group_shap(scorer, frame, contributions):
    from propensity.pipelines.explain.groups import group_features
    from propensity.pipelines.explain.spread import spread_over_event_types

    groups = group_features(scorer.feature_names, scorer.event_types, getattr(scorer, "input_rules", None))
    logodds, _ = spread_over_event_types(contributions, frame, groups)
    return logodds


def _oracle_model(scorer, frame, truth, seed: int):
    """Group SHAP of a LightGBM regressor on logit(true probability), two-fold (fit on one half)."""
    import lightgbm as lgb
    import numpy as np
    import pandas as pd

    from propensity.pipelines.training.matrix import model_array

    X = model_array(frame, scorer.feature_names, scorer.categories)
    p = np.clip(truth, 1e-6, 1 - 1e-6)
    y = np.log(p / (1 - p))
    fold = np.random.default_rng(seed).random(len(y)) < 0.5
    parts = []
    for train_rows in (fold, ~fold):
        model = lgb.LGBMRegressor(n_estimators=300, learning_rate=0.05, num_leaves=31, min_child_samples=40,
                                  subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=seed,
                                  verbose=-1)
        model.fit(X[train_rows], y[train_rows])
        contrib = model.predict(X[~train_rows], pred_contrib=True)[:, :-1]
        parts.append(pd.DataFrame(contrib, columns=scorer.feature_names, index=np.flatnonzero(~train_rows)))
    return pd.concat(parts).sort_index()


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr

    from propensity.pipelines.explain.attribution import feature_contributions
    from propensity.pipelines.synthetic import (
        HIDDEN_EVENT_WEIGHTS,
        WorldConfig,
        generate_world,
        true_probability,
    )
    from propensity.pipelines.synthetic.contributions import true_contributions
    from propensity.pipelines.training.scorer import load_scorer

    folder = args.workdir / f"scorer_{args.contacts}x{args.days}_s{args.seed}"
    scorer = load_scorer(folder)
    frame = pd.read_parquet(folder / "features.parquet").reset_index(drop=True)
    as_of = frame["as_of"].iloc[0]
    world = generate_world(WorldConfig(contacts=args.contacts, days=args.days, seed=args.seed))
    truth = true_contributions(world, as_of)
    rows = frame[["contact_id", "as_of"]].merge(truth, on=["contact_id", "as_of"], how="left", validate="one_to_one")
    drivers = [c for c in truth.columns if c not in ("contact_id", "as_of")]
    oracle_p = frame[["contact_id", "as_of"]].merge(true_probability(world, as_of, 30, n_simulations=64),
                                                    on=["contact_id", "as_of"], how="left")["true_probability"]

    contributions, _ = feature_contributions(scorer, frame, method="pred_contrib")
    shap = _group_shap(scorer, frame, contributions)
    oracle = _group_shap(scorer, frame, _oracle_model(scorer, frame, oracle_p.to_numpy(), args.seed))
    table = pd.DataFrame({
        "shap": shap.abs().mean(),
        "oracle_model": oracle.abs().mean(),
    })
    values = rows[drivers].to_numpy(dtype="float64")
    table = table.join(pd.DataFrame({"truth_centred": np.abs(values - values.mean(axis=0)).mean(axis=0),
                                     "truth_raw": np.abs(values).mean(axis=0)}, index=drivers), how="outer").fillna(0.0)
    table["share_shap"] = table["shap"] / table["shap"].sum()
    compared = table.loc[[d for d in drivers if d in table.index]]
    rho = {name: float(spearmanr(compared["shap"], compared[name]).statistic)
           for name in ("truth_centred", "truth_raw", "oracle_model")}
    rho["oracle_model_vs_truth_centred"] = float(spearmanr(compared["oracle_model"], compared["truth_centred"]).statistic)
    events = [d for d in compared.index if d in HIDDEN_EVENT_WEIGHTS or d == "page_view"]
    fit = [d for d in compared.index if d not in events]
    rho["truth_centred_events_only"] = float(spearmanr(compared.loc[events, "shap"], compared.loc[events, "truth_centred"]).statistic)
    rho["truth_centred_attributes_only"] = float(spearmanr(compared.loc[fit, "shap"], compared.loc[fit, "truth_centred"]).statistic)
    # the per-unit hidden weights are not contributions (a weight times how much of it a contact has)
    rho["abs_hidden_weight_events_only"] = float(spearmanr(compared.loc[events, "shap"],
                                                           [abs(HIDDEN_EVENT_WEIGHTS[e]) for e in events]).statistic)
    table = table.sort_values("truth_centred", ascending=False)
    return {"contacts": args.contacts, "seed": args.seed, "as_of": str(as_of), "rows": len(frame),
            "spearman": rho, "groups_compared": list(compared.index),
            "table": table.reset_index(names="group").to_dict(orient="records")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contacts", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/propensity-quality-bench"))
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "explain_truth.json")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    result = run(args)
    result["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"explain_truth: SaaS world {args.contacts:,} contacts seed {args.seed}, test cut-off {result['as_of']}, "
          f"{result['rows']:,} rows")
    print(f"  {'group':<18} {'shap':>7} {'share':>6} {'truth_c':>8} {'truth_raw':>9} {'oracle_m':>8}")
    for r in result["table"]:
        print(f"  {r['group']:<18} {r['shap']:7.4f} {r['share_shap']:6.1%} {r['truth_centred']:8.4f} "
              f"{r['truth_raw']:9.4f} {r['oracle_model']:8.4f}")
    for name, value in result["spearman"].items():
        print(f"  Spearman shap vs {name}: {value:.2f}" if "_vs_" not in name else f"  Spearman {name}: {value:.2f}")
    print(f"  {result['uptime']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "benchmarks/explain_truth.py", **result}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
