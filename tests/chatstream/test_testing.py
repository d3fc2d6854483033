from __future__ import annotations

import httpx
import pytest

from chatstream.testing import serve


def test_serve_runs_a_server_until_the_block_ends() -> None:
    with serve(["--model", "mock"], ready_path="/healthz", timeout=60) as server:
        assert httpx.get(f"{server.url}/readyz").json()["model"] == "mock"
        assert server.ready_after > 0
        assert server.process.poll() is None
        assert f"serving on {server.url}/" in server.log()
    assert server.process.poll() is not None


def test_a_server_that_cannot_start_shows_its_log() -> None:
    with (
        pytest.raises(RuntimeError, match="CHATSTREAM_PREFILL_TOKENS"),
        serve(["--model", "mock"], env={"CHATSTREAM_PREFILL_TOKENS": "0"}, timeout=60),
    ):
        pass
