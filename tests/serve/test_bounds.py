"""What keeps the server's memory bounded: the admission gate and the store of page results."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from unetkit.serve.app import Busy, Gate
from unetkit.serve.results import Result, ResultStore


def test_a_place_goes_back_when_the_work_ends_even_if_the_client_left():
    async def scenario():
        gate = Gate(workers=1, queue=1)
        go = threading.Event()
        with gate.admit() as first:
            task = asyncio.ensure_future(first.run(go.wait, 10))
            await asyncio.sleep(0.05)
        with gate.admit():
            with pytest.raises(Busy):
                gate.admit()
        task.cancel()  # the client went away: the image is still being segmented
        await asyncio.sleep(0.05)
        assert gate.admitted == 1
        go.set()
        for _ in range(100):
            if gate.admitted == 0:
                break
            await asyncio.sleep(0.01)
        assert gate.admitted == 0
        gate.executor.shutdown()

    asyncio.run(scenario())


def test_the_store_drops_the_oldest_results_past_its_bytes():
    def result(name: str) -> Result:
        image = np.zeros((100, 100, 1), np.uint8)
        return Result(name, "m", image, np.zeros((100, 100), np.uint8), np.zeros((2, 100, 100), np.float16), None,
                      None)

    size = result("x").nbytes
    store = ResultStore(3 * size)
    kept = [result(f"r{i}") for i in range(5)]
    assert all(store.add(r) for r in kept)
    assert len(store) == 3 and store.get(kept[0].id) is None and store.get(kept[4].id) is not None
    assert not ResultStore(size - 1).add(result("big"))
