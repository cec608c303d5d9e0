"""Parameter sweeps: an Optuna study whose trials are walk-forward evaluations.

* :mod:`trader.sweep.space` - the search space (``sweep.space`` or every strategy's declared parameters),
  drawing a trial's parameters, the trial's settings, the seeded sampler, the pruner, the objectives, and
  timing-free pruning decisions against a frozen list of finished trials.
* :mod:`trader.sweep.evaluate` - one trial's walk-forward evaluation in pieces that fan out.
* :mod:`trader.sweep.report` - outputs of a finished sweep: the trials table, the best settings as a YAML
  overlay, the summary (DSR, PBO, MinBTL, Pareto front) and ``sweep.html``.

Nothing is imported here, so that a worker evaluating a trial does not pay for importing Optuna.
"""

from __future__ import annotations
