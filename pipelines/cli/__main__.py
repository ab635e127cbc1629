"""`python -m propensity.pipelines.cli`."""

from propensity.pipelines.cli import main

raise SystemExit(main())
