"""`python -m authsvc` and the `authsvc` script: the command line."""

import signal
import sys


def _stopped_while_loading(signum: int, frame: object) -> None:
    sys.exit(0 if signum == signal.SIGTERM else 128 + signum)


def main() -> None:
    """Loads and runs the command line; a stop signal while it loads (half a second of imports) ends the process
    quietly, with the exit codes of a stop during start-up (authsvc.server.Interrupted): 0 for SIGTERM, 130
    for SIGINT."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped_while_loading)
    from authsvc.cli import main as run

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    run()


if __name__ == "__main__":
    main()
