"""Run the feedback service: ``python -m loopwise.services.feedback``."""

from loopwise.server import run
from loopwise.services.feedback.server import main

run(main)
