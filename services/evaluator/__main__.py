"""Run the evaluator service: ``python -m loopwise.services.evaluator``."""

from loopwise.server import run
from loopwise.services.evaluator.server import main

run(main)
