"""Which OULAD signal reaches a day-60 model? An independent ablation, not the product's pipeline.

Not a test. Reads the raw Parquet files (``../shared/data/oulad``) with plain DuckDB SQL, builds
one row per enrolment still registered on day 60 with hand-written groups of columns, and fits an
untuned LightGBM (train 2013, test 2014, the product's split by presentation) on growing sets of
groups, so each group's worth is measured, not guessed::

    python benchmarks/oulad_signal.py --root ../shared/data/oulad

Point in time: only rows dated before day 60 (``date < 60``, ``date_submitted < 60``). The scores
are read in two ways, because the files do not say when a mark was known: ``at submission`` (the
score stamped on its submission day, as ``configs/datasets/oulad.yaml`` did) and ``marked`` (a
score counts only from ``max(submission, deadline) + MARK_LAG`` days, computer-marked CMAs on
submission). Writes ``benchmarks/results/oulad_signal.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CUTOFF = 60
MARK_LAG = 14  # days from the deadline to a returned tutor mark (an assumption; see the module doc)

_SQL = """
WITH
reg AS (
  SELECT code_module, code_presentation, CAST(id_student AS BIGINT) id_student, date_registration
  FROM read_parquet('{root}/studentRegistration.parquet')
  WHERE date_unregistration IS NULL OR date_unregistration >= {cut}
),
info AS (
  SELECT code_module, code_presentation, CAST(id_student AS BIGINT) id_student, gender, region,
         highest_education, imd_band, age_band, num_of_prev_attempts, studied_credits, disability,
         CAST(final_result IN ('Pass', 'Distinction') AS INTEGER) AS label
  FROM read_parquet('{root}/studentInfo.parquet')
),
vle AS (
  SELECT s.code_module, s.code_presentation, CAST(s.id_student AS BIGINT) id_student,
         v.activity_type, s.date, s.sum_click
  FROM read_parquet('{root}/studentVle_ds/*/*/*.parquet', hive_partitioning = true) s
  JOIN read_parquet('{root}/vle.parquet') v USING (id_site, code_module, code_presentation)
  WHERE s.date < {cut}
),
clicks AS (
  SELECT code_module, code_presentation, id_student,
         {click_pivot},
         sum(sum_click) AS clicks_all,
         count(DISTINCT date) AS days_all,
         count(DISTINCT date) FILTER (WHERE date >= {cut} - 14) AS days_last14,
         sum(sum_click) FILTER (WHERE date >= {cut} - 14) AS clicks_last14,
         sum(sum_click) FILTER (WHERE date < 0) AS clicks_before_start,
         min(date) AS first_click_day
  FROM vle GROUP BY ALL
),
asm AS (
  SELECT a.code_module, a.code_presentation, CAST(sa.id_student AS BIGINT) id_student,
         a.assessment_type, a.date AS deadline, a.weight, sa.date_submitted, sa.is_banked, sa.score,
         CASE WHEN a.assessment_type = 'CMA' OR sa.is_banked = 1 THEN sa.date_submitted
              ELSE greatest(sa.date_submitted, coalesce(a.date, sa.date_submitted)) + {lag} END AS marked_day
  FROM read_parquet('{root}/studentAssessment.parquet') sa
  JOIN read_parquet('{root}/assessments.parquet') a USING (id_assessment)
  WHERE sa.date_submitted < {cut}
),
asm_agg AS (
  SELECT code_module, code_presentation, id_student,
         count(*) AS n_submitted,
         sum(is_banked) AS n_banked,
         avg(date_submitted - deadline) FILTER (WHERE is_banked = 0) AS mean_lateness,
         max(date_submitted - deadline) FILTER (WHERE is_banked = 0) AS max_lateness,
         avg(score) AS score_mean_at_sub,
         min(score) AS score_min_at_sub,
         arg_max(score, date_submitted) AS score_last_at_sub,
         sum(score * weight) / nullif(sum(weight), 0) AS score_wmean_at_sub,
         count(*) FILTER (WHERE score < 40) AS n_fail_at_sub,
         avg(score) FILTER (WHERE marked_day < {cut}) AS score_mean_marked,
         min(score) FILTER (WHERE marked_day < {cut}) AS score_min_marked,
         arg_max(score, marked_day) FILTER (WHERE marked_day < {cut}) AS score_last_marked,
         count(*) FILTER (WHERE marked_day < {cut} AND score < 40) AS n_fail_marked
  FROM asm GROUP BY ALL
),
due AS (  -- assessments whose deadline passed before the cut-off, and the enrolment's submission
  SELECT i.code_module, i.code_presentation, i.id_student,
         count(*) AS n_due,
         count(*) FILTER (WHERE sa.date_submitted IS NULL OR sa.date_submitted > a.date) AS n_missed
  FROM info i JOIN read_parquet('{root}/assessments.parquet') a USING (code_module, code_presentation)
  LEFT JOIN read_parquet('{root}/studentAssessment.parquet') sa
    ON sa.id_assessment = a.id_assessment AND CAST(sa.id_student AS BIGINT) = i.id_student
  WHERE a.date < {cut}
  GROUP BY ALL
)
SELECT i.*, r.date_registration, c.* EXCLUDE (code_module, code_presentation, id_student),
       s.* EXCLUDE (code_module, code_presentation, id_student),
       d.n_due, d.n_missed
FROM reg r JOIN info i USING (code_module, code_presentation, id_student)
LEFT JOIN clicks c USING (code_module, code_presentation, id_student)
LEFT JOIN asm_agg s USING (code_module, code_presentation, id_student)
LEFT JOIN due d USING (code_module, code_presentation, id_student)
"""

TYPES = ("oucontent", "forumng", "quiz", "homepage", "subpage", "resource", "url", "ouwiki",
         "glossary", "oucollaborate", "externalquiz", "page", "questionnaire", "dataplus",
         "dualpane", "folder", "htmlactivity", "ouelluminate", "repeatactivity", "sharedsubpage")

GROUPS: dict[str, list[str]] = {
    "demographics": ["code_module", "gender", "region", "highest_education", "imd_band", "age_band",
                     "num_of_prev_attempts", "studied_credits", "disability"],
    "registration": ["date_registration"],
    "clicks per type": [f"clicks_{t}" for t in TYPES] + [f"days_{t}" for t in TYPES]
    + ["clicks_all", "days_all", "days_last14", "clicks_last14", "clicks_before_start", "first_click_day"],
    "submissions and misses": ["n_submitted", "n_banked", "n_due", "n_missed", "mean_lateness", "max_lateness"],
    "scores (marked)": ["score_mean_marked", "score_min_marked", "score_last_marked", "n_fail_marked"],
    "scores (at submission)": ["score_mean_at_sub", "score_min_at_sub", "score_last_at_sub",
                               "score_wmean_at_sub", "n_fail_at_sub"],
}
CATEGORICAL = ("code_module", "gender", "region", "highest_education", "imd_band", "age_band", "disability")


def frame(root: Path):
    import duckdb

    pivot = ",\n         ".join(
        f"sum(sum_click) FILTER (WHERE activity_type = '{t}') AS clicks_{t}, "
        f"count(DISTINCT date) FILTER (WHERE activity_type = '{t}') AS days_{t}" for t in TYPES)
    sql = _SQL.format(root=root, cut=CUTOFF, lag=MARK_LAG, click_pivot=pivot)
    # a fixed row order: LightGBM's bagging draws by row position, and DuckDB's order is not fixed
    df = duckdb.sql(sql).df().sort_values(["code_module", "code_presentation", "id_student"], ignore_index=True)
    for column in CATEGORICAL:
        df[column] = df[column].astype("category")
    return df


def fit_auc(df, columns: list[str], seed: int = 0) -> float:
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    train = df[df.code_presentation.str.startswith("2013")]
    test = df[df.code_presentation.str.startswith("2014")]
    model = lgb.LGBMClassifier(n_estimators=400, learning_rate=0.03, num_leaves=31, min_child_samples=50,
                               subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=seed,
                               verbose=-1, n_jobs=1)
    model.fit(train[columns], train.label)
    return float(roc_auc_score(test.label, model.predict_proba(test[columns])[:, 1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "oulad")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "oulad_signal.json")
    ap.add_argument("--mark-lags", type=int, nargs="*", default=[0, 7, 21],
                    help="also fit the full set with TMA marks known this many days after the deadline")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    df = frame(args.root.resolve())
    print(f"{len(df):,} enrolments registered on day {CUTOFF}; pass rate {df.label.mean():.3f}")
    steps = [
        ["demographics"], ["demographics", "registration"],
        ["demographics", "registration", "clicks per type"],
        ["demographics", "registration", "clicks per type", "submissions and misses"],
        ["demographics", "registration", "clicks per type", "submissions and misses", "scores (marked)"],
        ["demographics", "registration", "clicks per type", "submissions and misses", "scores (at submission)"],
        ["demographics", "registration", "submissions and misses", "scores (marked)"],
    ]
    rows = []
    for groups in steps:
        columns = [c for g in groups for c in GROUPS[g]]
        auc = fit_auc(df, columns)
        rows.append({"groups": groups, "columns": len(columns), "test_auc": auc})
        print(f"  {auc:.4f}  {' + '.join(groups)} ({len(columns)} columns)")
    # How much the marking-time assumption matters: the full set with marks known after each lag
    global MARK_LAG
    lags = []
    full = [c for g in steps[4] for c in GROUPS[g]]
    for lag in args.mark_lags:
        MARK_LAG = lag
        auc = fit_auc(frame(args.root.resolve()), full)
        lags.append({"mark_lag_days": lag, "test_auc": auc})
        print(f"  {auc:.4f}  {' + '.join(steps[4])}, TMA marks known {lag} days after the deadline")
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"  {load}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "benchmarks/oulad_signal.py", "cutoff_day": CUTOFF,
                                     "mark_lag_days": 14, "rows": len(df), "steps": rows, "mark_lags": lags,
                                     "uptime": load}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
