"""authsvc: a gRPC token service for chat backends."""

__version__ = "0.1.0"
