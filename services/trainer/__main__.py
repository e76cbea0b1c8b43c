"""Run the trainer service: ``python -m loopwise.services.trainer``."""

from loopwise.server import run
from loopwise.services.trainer.server import main

run(main)
