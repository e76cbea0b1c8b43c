"""The seed of a service process (docs/architecture.md §11).

Unset ``LOOPWISE_SEED`` (the default): every process draws its seed from the operating
system, so two starts (two replicas, a restart, another use case) never explore in
lockstep. Set: the run is reproducible. Either way the process logs its seed once, so
that a run can be replayed by setting it. A worker of the decision service's
multi-worker mode derives its own seed from a set ``LOOPWISE_SEED`` and its index, so
that workers differ from each other and each stays reproducible.
"""

from __future__ import annotations

import logging
import secrets

import numpy as np

from loopwise.settings import Settings

log = logging.getLogger("loopwise.seed")

# Seeds are below 2**32: scikit-learn's random_state takes nothing larger.
SEED_BITS = 32


def draw_seed() -> int:
    """A seed from the operating system's random source."""
    return secrets.randbits(SEED_BITS)


def worker_seed(seed: int, worker: int) -> int:
    """The seed of worker ``worker`` of a process seeded with ``seed``: reproducible,
    different for every worker."""
    return int(np.random.SeedSequence([seed, worker]).generate_state(1, np.uint32)[0])


def process_seed(settings: Settings, service: str, worker: int | None = None) -> int:
    """This process's seed: ``settings.seed`` (per worker when ``worker`` is set), or one
    drawn from the operating system when it is unset. Logs it once."""
    if settings.seed is None:
        seed, source = draw_seed(), "drawn from the operating system"
    elif worker is None:
        seed, source = settings.seed, "LOOPWISE_SEED"
    else:
        seed, source = worker_seed(settings.seed, worker), f"LOOPWISE_SEED={settings.seed}, worker {worker}"
    fields = {"seed": seed, "seed_source": source}
    if worker is not None:
        fields["worker"] = worker
    log.info("%s seed %d (%s)", service, seed, source, extra=fields)
    return seed
