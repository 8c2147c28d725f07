"""`python -m authsvc` and the `authsvc` script: the command line."""

import importlib.util
import signal
import sys

# What the command line (the server and its admin commands) imports beyond the client's grpcio, protobuf and
# cryptography: the packages of the extra `server`, by the name they are imported as.
SERVER_MODULES = ("asyncpg", "jwt", "prometheus_client", "grpc_health", "grpc_reflection", "grpc_status")


def missing_server_modules() -> list[str]:
    """The server's modules that are not installed (a `pip install authsvc` has only the client)."""
    return [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]


def _stopped_while_loading(signum: int, frame: object) -> None:
    sys.exit(0 if signum == signal.SIGTERM else 128 + signum)


def main() -> None:
    """Loads and runs the command line; a stop signal while it loads (half a second of imports) ends the process
    quietly, with the exit codes of a stop during start-up (authsvc.server.Interrupted): 0 for SIGTERM, 130
    for SIGINT."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped_while_loading)
    if missing := missing_server_modules():
        sys.exit(
            f"authsvc: the server's dependencies are not installed (no {', '.join(missing)}): "
            "pip install 'authsvc[server]' (and 'authsvc[embedded]' for the development database)"
        )
    from authsvc.cli import main as run

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    run()


if __name__ == "__main__":
    main()
