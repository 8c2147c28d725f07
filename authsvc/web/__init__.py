"""authsvc in the caller's web stack: check `Authorization: Bearer <token>` on every request, and mount the token
provider a chat client refreshes its token from. docs/web.md has the HTTP contract.

- authsvc.web.contract: the contract itself (which status, headers and JSON body for which verdict), no I/O;
- authsvc.web.asgi: a plain ASGI middleware and a plain ASGI token provider (no extra package needed);
- authsvc.web.fastapi: a FastAPI dependency and the token provider's route (`pip install authsvc[fastapi]`).
"""
