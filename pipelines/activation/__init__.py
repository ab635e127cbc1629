"""Activation: score triggers, a durable outbox of signed webhooks, and pushing scores to tools.

``triggers``  YAML-configured triggers evaluated on each score change (inside the caller's
              transaction) and by a periodic sweep; firings are written to the outbox.
``outbox``    at-least-once delivery of the outbox as signed webhooks, retries with backoff and
              jitter, a dead-letter table and replay.
``push``      ``propensity push``: scores as traits to Customer.io, Segment-spec endpoints or a
              webhook; only changed contacts, batched, rate-limited, resumable.
``tables``    the SQLAlchemy tables all of this keeps in the service database.
"""
