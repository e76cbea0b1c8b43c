"""Run the decision service: ``python -m loopwise.services.decision``."""

from loopwise.server import run
from loopwise.services.decision.server import main

run(main)
