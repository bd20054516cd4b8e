from __future__ import annotations

import asyncio

import pytest

from proxy.calendar.locks import LocalUserLocks, LockTimeout, UserLocks

pytestmark = pytest.mark.anyio


async def test_one_key_is_held_by_one_task_at_a_time() -> None:
    locks: UserLocks = LocalUserLocks()
    inside, most = 0, 0

    async def work() -> None:
        nonlocal inside, most
        async with locks.hold("conn-1\nprimary", timeout=5):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    await asyncio.gather(*(work() for _ in range(20)))
    assert most == 1


async def test_different_keys_do_not_wait_for_each_other() -> None:
    locks = LocalUserLocks()
    async with locks.hold("a", timeout=1), locks.hold("b", timeout=0.01):
        assert len(locks) == 2


async def test_a_lock_not_granted_in_time_raises_lock_timeout_and_leaves_nothing_behind() -> None:
    locks = LocalUserLocks()
    async with locks.hold("a", timeout=1):
        with pytest.raises(LockTimeout):
            async with locks.hold("a", timeout=0.02):
                pass
    assert len(locks) == 0  # entries live only while held or awaited: memory does not grow with users
    async with locks.hold("a", timeout=0.01):
        pass


async def test_fencing_tokens_increase_with_every_grant() -> None:
    locks = LocalUserLocks()
    tokens = []
    for key in ("a", "a", "b", "a"):
        async with locks.hold(key, timeout=1) as lease:
            tokens.append(lease.token)
            assert lease.key == key and not lease.expired()
    assert tokens == sorted(tokens) and len(set(tokens)) == 4


async def test_a_cancelled_waiter_does_not_keep_the_lock() -> None:
    locks = LocalUserLocks()
    async with locks.hold("a", timeout=1):
        waiter = asyncio.ensure_future(locks.hold("a", timeout=5).__aenter__())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with locks.hold("a", timeout=0.05):
        pass
    assert len(locks) == 0
