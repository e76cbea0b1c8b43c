"""``python -m loopwise.console [--host H] [--port P]``: serve the web console."""

from __future__ import annotations

import argparse

from loopwise.console.app import serve


def main() -> None:
    """Parse the command line and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m loopwise.console",
                                     description="Serve the loopwise web console (docs/console.md).")
    parser.add_argument("--host", help="interface to listen on (LOOPWISE_CONSOLE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (LOOPWISE_CONSOLE_PORT, default 8090)")
    args = parser.parse_args()
    serve(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
