"""The operator console: AdminService and the revocation calls of AuthService in a browser.

- `sessions`: who is logged in (sessions, CSRF tokens, the login rate limit, the one-time login link); no I/O.
- `inspector`: the verdict on a pasted token and why, from the one verification pipeline; no I/O.
- `figures`: each serving process's verify outcomes per second, state version and staleness.
- `app`: the Starlette routes, each validate → the same domain and storage calls as the servicers → render.
- `serve`: uvicorn in the serving process, on AUTHSVC_CONSOLE_PORT.
"""
