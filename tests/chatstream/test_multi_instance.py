"""Two real uvicorn instances on one real Redis act as one service."""

from __future__ import annotations

import threading

import httpx

from tests.servers import running_server
from tests.sse import iter_events

INSTANCE_ARGS = ("--model", "mock", "--mock-token-delay", "0.1", "--max-concurrent", "1")


def test_two_instances_share_conversations_and_the_global_limit(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url}
    with running_server(*INSTANCE_ARGS, env=env) as a, running_server(*INSTANCE_ARGS, env=env) as b:
        with httpx.Client(base_url=a.url, timeout=30) as on_a:
            first = on_a.post("/chat_stream", json={"user_input": "started on A"})
            assert first.status_code == 200
            cookies = on_a.cookies
        with httpx.Client(base_url=b.url, cookies=cookies, timeout=30) as on_b:
            second = on_b.post("/chat_stream", json={"user_input": "continued on B"})
            assert second.status_code == 200
            messages = on_b.get("/get_prompt").json()["messages"]
            assert [m["content"] for m in messages][::2] == ["started on A", "continued on B"]

        # One permit cluster-wide: while A generates, B's request waits in the shared queue.
        streaming = threading.Event()

        def hold_a_permit() -> None:
            body = {"user_input": "long"}
            with (
                httpx.Client(base_url=a.url, timeout=30) as client,
                client.stream("POST", "/chat_stream", json=body) as reply,
            ):
                for _ in reply.iter_text():
                    streaming.set()

        holder = threading.Thread(target=hold_a_permit)
        holder.start()
        assert streaming.wait(10)
        assert httpx.get(f"{b.url}/get_load").json()["processing"] == 1
        events: list[str] = []
        with httpx.Client(base_url=b.url, timeout=30) as other_user:
            headers = {"accept": "text/event-stream"}
            with other_user.stream(
                "POST", "/chat_stream", json={"user_input": "x"}, headers=headers
            ) as reply:
                events += [event.name for event in iter_events(reply.iter_lines())]
        holder.join(30)
        assert events[0] == "queued"
        assert events[-1] == "done"
        load = httpx.get(f"{a.url}/get_load").json()
        assert (load["processing"], load["waiting"], load["capacity"]) == (0, 0, 1)
