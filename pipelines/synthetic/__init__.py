"""A synthetic SaaS funnel with a known truth.

The world is a set of contacts (grouped in accounts) who browse the site, read emails, start a
trial, use the product, and sometimes buy. Conversions are drawn from a hidden daily hazard

.. math::

    h_c(t) = \\sigma\\Big(b_0 + \\mathrm{fit}_c + \\sum_k \\beta_k\\, s\\big(D_{k,c}(t)\\big)\\Big),
    \\qquad D_{k,c}(t) = \\sum_{e \\in k,\\ \\mathrm{day}(e) < t} 0.5^{(t - \\mathrm{day}(e)) / H},

where ``t`` is a day, ``D`` is the contact's decayed count of events of kind ``k`` before that
day (ages in whole days, half-life ``H``), ``s(x) = x / (1 + x / 3)`` saturates it, ``fit`` is
linear in ``log(company_size)``, industry, country, role and plan interest, and the weights
``beta`` are :data:`HIDDEN_EVENT_WEIGHTS`. Event rates depend only on hidden per-contact
parameters (an intent level times a per-kind mix), the contact's age (engagement is highest in
the first weeks after ``created_at``), the weekday, and two observable flags: a started trial
unlocks product usage and an unsubscribe mutes email activity. They never depend on past event
counts, so given the history at a cut-off the future is a Markov process that
:func:`true_probability` can simulate exactly.

Randomness is drawn per block of 2,048 contacts from ``SeedSequence(seed, spawn_key=(1,
block))``, so a world is identical whether it is generated at once or contact-chunk by chunk.
"""


from __future__ import annotations

from propensity.pipelines.synthetic.files import write_world
from propensity.pipelines.synthetic.tables import generate_world, iter_event_chunks
from propensity.pipelines.synthetic.truth import true_probability
from propensity.pipelines.synthetic.world import (
    EVENT_TYPES,
    HIDDEN_EVENT_WEIGHTS,
    HIDDEN_FIT_EFFECTS,
    SAAS_RULE_HIDDEN_KIND,
    World,
    WorldConfig,
)

__all__ = [
    "EVENT_TYPES",
    "HIDDEN_EVENT_WEIGHTS",
    "HIDDEN_FIT_EFFECTS",
    "SAAS_RULE_HIDDEN_KIND",
    "World",
    "WorldConfig",
    "generate_world",
    "iter_event_chunks",
    "true_probability",
    "write_world",
]
