from __future__ import annotations

import asyncio
import threading

import pytest

from chatstream.engines.channel import TokenChannel, post_all


def worker(channel: TokenChannel, *, error: Exception | None = None) -> threading.Thread:
    """A thread that posts ids 0, 1, 2 and then the end, stopping early once cancelled."""

    def run() -> None:
        for token in range(3):
            if channel.cancelled.is_set():
                break
            channel.post([token])
        channel.end(error)

    return threading.Thread(target=run)


async def receive_all(channel: TokenChannel) -> list[int]:
    ids: list[int] = []
    while (received := await channel.receive()) is not None:
        ids += received
    return ids


async def test_ids_arrive_in_order_then_the_end() -> None:
    channel = TokenChannel()
    thread = worker(channel)
    thread.start()
    assert await receive_all(channel) == [0, 1, 2]
    assert await channel.receive() is None  # the end stays the end
    thread.join()


async def test_the_workers_exception_is_raised_to_the_consumer_after_its_ids() -> None:
    channel = TokenChannel()
    thread = worker(channel, error=RuntimeError("the model failed"))
    thread.start()
    assert await channel.receive() == [0]
    with pytest.raises(RuntimeError, match="the model failed"):
        await receive_all(channel)
    thread.join()


async def test_only_the_first_end_counts() -> None:
    channel = TokenChannel()
    channel.end()
    channel.end(RuntimeError("too late"))
    assert await receive_all(channel) == []


async def test_close_tells_the_worker_and_returns_once_it_ended() -> None:
    channel = TokenChannel()
    started = threading.Event()
    release = threading.Event()

    def run() -> None:
        started.set()
        release.wait()
        channel.post([7])  # a step that was under way when the consumer left
        channel.end()

    thread = threading.Thread(target=run)
    thread.start()
    await asyncio.to_thread(started.wait)
    closing = asyncio.create_task(channel.close())
    await asyncio.sleep(0)
    assert channel.cancelled.is_set()
    assert not closing.done()  # the worker has not ended yet
    release.set()
    await closing
    thread.join()


async def test_a_batch_step_reaches_every_channel_with_one_wake_up_of_the_loop() -> None:
    channels = [TokenChannel() for _ in range(3)]
    loop = asyncio.get_running_loop()
    wake_ups = 0
    call_soon_threadsafe = loop.call_soon_threadsafe

    def counted(*args: object) -> object:
        nonlocal wake_ups
        wake_ups += 1
        return call_soon_threadsafe(*args)  # type: ignore[arg-type]

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]
    try:

        def run() -> None:
            for step in range(2):
                post_all([(channel, [10 * i + step]) for i, channel in enumerate(channels)])
            for channel in channels:
                channel.end()

        thread = threading.Thread(target=run)
        thread.start()
        received = [await receive_all(channel) for channel in channels]
        thread.join()
    finally:
        del loop.call_soon_threadsafe
    assert received == [[0, 1], [10, 11], [20, 21]]
    assert wake_ups == 2 + len(channels)  # one per step, then each end
