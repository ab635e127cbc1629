"""The plain-language verdict: its numbers are the comparison's own, in whole counts and spoken names."""

import re

import numpy as np
import pandas as pd
from compare_helpers import BANDS, scored_frame
from propensity.pipelines.compare import CompareConfig, compare_scores
from propensity.pipelines.compare.report import render_html
from propensity.pipelines.compare.verdict import (
    calls_sentence,
    horizon_words,
    plain_verdict,
    scores_verdict,
)

CONFIG = CompareConfig(n_boot=100, top_k_percent=(5, 10, 20))


def test_the_verdict_numbers_equal_the_compare_metrics():
    comparison = compare_scores(scored_frame(n=2000, seed=3), BANDS, CONFIG, meta={"horizon_days": 30})
    verdict = plain_verdict(comparison)
    top = comparison.top_k[comparison.top_k["k_percent"] == 10.0].set_index("model")
    leader = top["conversions"].round().idxmax()
    assert leader != "rules", "the helper frame's learned model beats the banded rules"
    first = verdict[0]
    calls = int(top["contacts"].iloc[0])
    more = round(top.loc[leader, "conversions"]) - round(top.loc["rules", "conversions"])
    name = {"learned": "the learned model", "learned_points": "the learned points"}[leader]
    assert first == (f"Calling the top 10% by {name} reaches {round(100 * top.loc[leader, 'recall'])}% of next "
                     f"month's conversions, your rules {round(100 * top.loc['rules', 'recall'])}%: "
                     f"{more:,} more conversions per {calls:,} calls.")
    assert calls == 200 and more > 0
    # the third model is said too, against the rules; no decimals in any count
    other = ({"learned", "learned_points"} - {leader}).pop()
    assert verdict[1].startswith(f"The learned {'model reaches' if other == 'learned' else 'points reach'} "
                                 f"{round(100 * top.loc[other, 'recall'])}% ({round(top.loc[other, 'conversions']):,} conversions")
    assert not re.search(r"\d\.\d+ (more|fewer|conversions|calls)", " ".join(verdict))
    # the ranking sentences follow the paired intervals of the gaps
    gaps = comparison.gaps.set_index("model")
    for model, said in (("learned", "the learned model"), ("learned_points", "the learned points")):
        sentence = next(s for s in verdict[2:] if said in s.lower())
        if gaps.loc[model, "roc_auc_gap_low"] > 0:
            assert "better than your rules, beyond chance" in sentence
        elif gaps.loc[model, "roc_auc_gap_high"] >= 0:
            assert "could be equally good" in sentence


def test_the_report_opens_with_the_verdict():
    comparison = compare_scores(scored_frame(n=800, seed=1), BANDS, CONFIG, meta={"horizon_days": 14})
    html = render_html(comparison)
    body = html.split("<body>", 1)[1]
    assert body.index('id="plain-verdict"') < body.index('class="meta"')
    for sentence in plain_verdict(comparison):
        assert sentence.replace("'", "&#39;") in html
    assert "the conversions of the next 14 days" in html


def test_when_the_rules_lead_they_are_named_first_and_a_tie_says_so():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0] * 10)
    rules = np.where(y == 1, 5.0, 1.0)
    learned = np.linspace(5, 0, y.size)
    sentence = scores_verdict(y, {"rules": rules, "learned": learned}, "rules", k=20)[0]
    assert sentence.startswith("Calling the top 20% by your rules reaches 100% of the conversions that followed, "
                               "the learned model ")
    assert "more conversions per 20 calls" in sentence
    tie = scores_verdict(y, {"rules": rules, "learned": rules.copy()}, "rules", k=20)[0]
    assert tie.endswith("the same number of conversions per 20 calls.") and "by your rules" in tie
    assert horizon_words(30) == "next month's conversions" and horizon_words(None) == "the conversions that followed"
    assert calls_sentence(pd.DataFrame(columns=["model", "k_percent", "contacts", "conversions", "recall"]),
                          10, "rules") == []
