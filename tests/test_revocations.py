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
