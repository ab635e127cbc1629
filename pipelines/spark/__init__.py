"""Spark-only steps: writing feature tables and batch scoring with the registered model."""
