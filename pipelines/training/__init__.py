"""Learning from outcomes: labels, time splits, leakage guard, models, calibration, tracking."""
