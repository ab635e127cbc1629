"""`propensity monitor`: rules, champion and learned points measured again on every closed cut-off,
input drift against the champion's training rows, alerts that lead back to train / tune / a rules
review, a history kept in the workspace and a self-contained HTML page."""
