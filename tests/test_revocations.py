"""The compact revocations of the token core: the same answers as a plain dict, whatever the changes."""

from __future__ import annotations

import random

from authsvc.revocations import RevocationSet
from authsvc.tokens import user_hash


def test_revocation_set_matches_a_dict_under_random_changes() -> None:
    rng = random.Random(7)
    model: dict[int, int] = {}
    keys = sorted({rng.randrange(-(2**63), 2**63) for _ in range(3000)})
    revocations = RevocationSet(keys, [k % 1000 for k in keys])
    model.update({k: k % 1000 for k in keys})
    pool = keys + [rng.randrange(-(2**63), 2**63) for _ in range(3000)]
    for step in range(20000):
        key = rng.choice(pool)
        if rng.random() < 0.3:
            revocations.remove(key)
            model.pop(key, None)
        else:
            revocations.set(key, step)
            model[key] = step
        if step % 997 == 0:
            probe = rng.sample(pool, 200)
            assert [revocations.get(k) for k in probe] == [model.get(k) for k in probe]
    assert len(revocations) == len(model)
    assert all(revocations.get(k) == v for k, v in model.items())


def test_remembered_answers_by_user_follow_every_change() -> None:
    rng = random.Random(11)
    users = [f"user-{i}" for i in range(300)]
    model: dict[str, int] = {u: i for i, u in enumerate(users[:100])}
    revocations = RevocationSet()
    for user, at in model.items():
        revocations.set(user_hash(user), at)
    for step in range(5000):
        user = rng.choice(users)
        # Asked first (so the answer is remembered), then changed, then asked again.
        assert revocations.get_user(user) == model.get(user)
        if rng.random() < 0.3:
            revocations.remove(user_hash(user))
            model.pop(user, None)
        elif rng.random() < 0.5:
            revocations.set(user_hash(user), 1000 + step)
            model[user] = 1000 + step
        assert revocations.get_user(user) == model.get(user)
        other = rng.choice(users)  # a change to one user must not leave another's answer stale either
        assert revocations.get_user(other) == model.get(other)
    # More users than it remembers: it forgets, and still answers right.
    many = [f"u{i}" for i in range(10_000)]
    assert all(revocations.get_user(u) is None for u in many)
    assert all(revocations.get_user(u) == model.get(u) for u in users)


def test_revocation_set_sorts_unsorted_input() -> None:
    revocations = RevocationSet([5, -3, 9], [50, -30, 90])
    assert [revocations.get(k) for k in (9, 5, -3, 4)] == [90, 50, -30, None]


def test_revoking_answers_what_judging_a_token_needs_under_random_changes() -> None:
    """`revoking(user, iat)` may skip the look-up for a token issued after every revocation held, never one that a
    revocation in force (from the snapshot, set since, or left after removals and merges) still revokes."""
    rng = random.Random(13)
    users = [f"user-{i}" for i in range(2000)]
    initial = {u: rng.randrange(0, 1000) for u in users[:1500]}
    pairs = sorted((user_hash(u), at) for u, at in initial.items())
    revocations = RevocationSet([k for k, _ in pairs], [t for _, t in pairs])
    model = dict(initial)
    assert revocations.newest == max(initial.values())
    for step in range(6000):
        user = rng.choice(users)
        if rng.random() < 0.4:  # removals take the newest away now and then; merges happen along the way
            revocations.remove(user_hash(user))
            model.pop(user, None)
        else:
            at = rng.randrange(0, 1000 + step // 4)
            revocations.set(user_hash(user), at)
            model[user] = at
        assert revocations.newest >= max(model.values(), default=float("-inf"))
        for probe in rng.sample(users, 5):
            iat = rng.randrange(0, 1000 + step // 4 + 2)
            answer = revocations.revoking(probe, iat)
            revoked = probe in model and iat < model[probe]
            assert (answer is not None and iat < answer) == revoked
            if answer is not None:
                assert answer == model[probe]
    assert len(revocations) == len(model)  # merges what is pending
    assert revocations.newest == max(model.values())  # merged: the bound is exact again
    assert RevocationSet().revoking("anyone", -(2**62)) is None
