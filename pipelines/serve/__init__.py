"""The real-time scoring service (``propensity serve``): Segment-shaped ingest, incremental rule
scores, triggers through ``propensity.pipelines.activation``.

``app``      FastAPI app factory (``create_app``) and the HTTP surface
``worker``   the single writer: group commits, rescoring, triggers, the decay sweep
``state``    incremental rule scoring that equals ``propensity.pipelines.rules.score`` for the same as_of
``learned``  the registered model's score from an in-memory event mirror (features as the batch)
``ingest``   Segment calls -> canonical event rows and contact updates (pure)
``db``       engine factory and the service tables (SQLite WAL or PostgreSQL)
``config``   ``configs/serve.yaml`` and write keys from the environment
``metrics``  Prometheus metrics
"""
