"""``python -m loopwise.cli``: the ``loopwise`` command."""

from loopwise.cli import main

main()
