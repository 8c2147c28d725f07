"""Fresh EdDSA tokens through authsvc's Verifier (the code of the server and the LocalVerifier) with each Ed25519
backend of authsvc.keys, interleaved in one run: `.venv/bin/python -m bench.eddsa_backends [TOKENS] [ROUNDS]`."""

from __future__ import annotations

import secrets
import statistics
import sys
import time

from authsvc import keys, tokens
from authsvc.clock import Micros, system_clock
from authsvc.verifier import Verifier


def main(count: int = 3000, rounds: int = 5) -> None:
    pair = keys.load(keys.EDDSA, keys.generate(keys.EDDSA))
    app = tokens.App(
        id=1,
        api_key="bench-eddsa",
        name="bench",
        secrets=(tokens.Secret("s1", secrets.token_urlsafe(32)),),
        algorithm=keys.EDDSA,
        key_pairs=(tokens.KeyPair("k1", pair),),
    )
    now = system_clock()
    issued = [
        tokens.issue(app, f"u{i}", now=now, issuer="authsvc", jti=secrets.token_hex(16), ttl=3600_000_000).token
        for i in range(count)
    ]

    def no_revocation(_app_id: int, _user_id: str, _issued_at: Micros) -> Micros | None:
        return None

    sodium = keys._sodium_open
    backends = {"libsodium": sodium, "openssl": None} if sodium is not None else {"openssl": None}
    rates: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(rounds):
        for name, backend in backends.items():
            keys._sodium_open = backend
            verifier = Verifier()  # a new cache: every token is fresh to it
            started = time.perf_counter()
            for token in issued:
                if verifier.verify(token, app, now=now, leeway=0, revoked_before=no_revocation).outcome.name != "VALID":
                    raise SystemExit(f"{name}: a valid token was refused")
            rates[name].append(count / (time.perf_counter() - started))
    keys._sodium_open = sodium
    for name, values in rates.items():
        print(f"{name:10s} median {statistics.median(values):8,.0f}/s  rounds {min(values):,.0f}-{max(values):,.0f}")
    if len(rates) == 2:
        print(f"libsodium / openssl: {statistics.median(rates['libsodium']) / statistics.median(rates['openssl']):.2f}")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:3]))
