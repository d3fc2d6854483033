"""Bad input against a real server: whatever a client sends, no 5xx, no hang, and the server
stays healthy, with nothing held and no error in its log.

Property-based (hypothesis) over every route's body, headers and cookies, then schemathesis
over the app's own OpenAPI schema. The server is a real ``chatstream serve`` (uvicorn) on the
mock engine and a real Redis.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis as sync_redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.conftest import real_redis_url
from tests.servers import Server, running_server

from .state import COOKIE, assert_well_formed, errors_in, held_anything, history

pytestmark = pytest.mark.redis

API_KEY = "fuzz-key-0123456789abcdef0123456789"
TIMEOUT = 10.0  # a request that takes longer counts as a hang

FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class Target:
    server: Server
    redis: sync_redis.Redis

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=TIMEOUT)


@dataclass
class Conversation:
    cookie: str
    message_id: str  # of its reply
    conversation_id: str

    def path(self, template: str) -> str:
        """A route's path, with this conversation's ids for its ``{conversation_id}`` or
        ``{message_id}``, and the page's script for a static file's ``{name}``."""
        path = template.replace("{conversation_id}", self.conversation_id)
        return path.replace("{message_id}", self.message_id).replace("{name}", "app.js")


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    url = real_redis_url()
    client = sync_redis.Redis.from_url(url, socket_timeout=5)
    client.flushdb()
    # Thousands of fuzzed turns from one address: no rate limit.
    args = (
        "--model",
        "mock",
        "--mock-token-delay",
        "0",
        "--max-new-tokens",
        "8",
        "--rate-limit",
        "0",
    )
    with running_server(*args, "--api-keys", API_KEY, "--docs", env={"REDIS_URL": url}) as server:
        yield Target(server, client)
        assert_healthy(server, client)
    client.flushdb()
    client.close()


@pytest.fixture
def conversation(target: Target) -> Conversation:
    """A live session with one reply, for the fuzzed requests to carry."""
    with target.client() as user:
        reply = user.post("/chat_stream", json={"user_input": "a conversation to poke at"})
        assert reply.status_code == 200
        conversation_id = user.get("/get_prompt").json()["conversation_id"]
        return Conversation(user.cookies[COOKIE], reply.headers["x-message-id"], conversation_id)


def assert_healthy(server: Server, redis: sync_redis.Redis) -> None:
    """Alive, ready, serving a conversation, nothing left held, nothing logged as an error."""
    assert server.process.poll() is None
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.post("/chat_stream", json={"user_input": "still there?"}).status_code == 200
        assert_well_formed(history(client))
    assert held_anything(redis) == {"permits": 0, "waiters": 0, "conversation leases": 0}
    errors = errors_in(server.log())
    assert not errors, "\n".join(errors[:10])


# -- what a client may send ------------------------------------------------------------------

# Field names the routes give meaning to, and the serializer's reserved ones.
FIELDS = (
    *("user_input", "regenerate", "temperature", "top_p", "top_k", "max_new_tokens"),
    *("repetition_penalty", "message_id", "is_like", "form_data", "messages", "role"),
    *("content", "type", "text", "stream", "stream_options", "include_usage", "max_tokens"),
    *("max_completion_tokens", "stop", "n", "model", "__type__", "data"),
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([0, 1, -1, 2**63, 8192, 8193, 0.0, 1e-300, 1e308, -0.0])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["", " ", "user", "assistant", "system", "text", "<script>", "\u202e"])
)
keys = st.sampled_from(FIELDS) | st.text(max_size=10)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=15,
)
# Objects with the routes' field names and any values: validation is reached, not only parsing.
objects = st.dictionaries(keys, json_values, max_size=6)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", ""]) | json_values},
        optional={
            "content": st.text(max_size=20)
            | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text()}))
            | json_values
        },
    ),
    max_size=4,
)
COMPLETION_FIELDS = ("model", "stream", "stream_options", "max_tokens", "max_completion_tokens")
completion_bodies = st.fixed_dictionaries(
    {"messages": messages},
    optional={field: json_values for field in (*COMPLETION_FIELDS, "temperature", "top_p", "stop")},
)
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
)
# What Python's json reads but is no JSON text, and what sits right at a limit: hypothesis would
# rarely build these by itself, so each is also sent to each route as it is.
EDGE_BODIES = [
    b"",
    b"null",
    b"{",
    b"\xff\xfe{}",
    b"\xef\xbb\xbf{}",
    b"[" * 5000 + b"]" * 5000,
]
EDGE_VALUES = [
    b"NaN",
    b"-Infinity",
    b"1e400",
    b"9" * 5000,
    b'"\\ud800"',
    b'"a\\udfffb"',
    b'{"a":' * 900 + b"1" + b"}" * 900,
    b'{"__type__": "chatstream.ChatPrompt", "data": {"messages": []}}',
    b'{"__type__": "unknown", "data": 1}',
    b'"' + b"x" * 16_001 + b'"',
]
# Where each route takes a free value; feedback needs a real reply's id to reach its storage.
EDGE_TEMPLATES = {
    "/chat_stream": b'{"user_input": %s}',
    "/set_generation_params": b'{"temperature": %s}',
    "/set_feedback": b'{"message_id": "MESSAGE_ID", "is_like": true, "form_data": {"x": %s}}',
    "/v1/chat/completions": b'{"messages": [{"role": "user", "content": %s}], "stop": %s}',
    "/conversations": b'{"title": %s}',
    "/stop_generation": b'{"message_id": %s}',
    "/conversations/{conversation_id}": b'{"title": %s}',
}


def edge_bodies(path: str, conversation: Conversation) -> list[bytes]:
    template = EDGE_TEMPLATES[path].replace(b"MESSAGE_ID", conversation.message_id.encode())
    values = [template % ((value,) * template.count(b"%s")) for value in EDGE_VALUES]
    return EDGE_BODIES + values


def body_for(path: str, conversation: Conversation) -> st.SearchStrategy[bytes]:
    if path not in EDGE_TEMPLATES:  # a route that reads no body
        return st.binary(max_size=200)
    shaped: st.SearchStrategy[Any] = objects
    if path == "/v1/chat/completions":
        shaped = completion_bodies
    elif path == "/set_feedback":
        shaped = st.fixed_dictionaries(
            {"message_id": st.just(conversation.message_id) | json_values},
            optional={"is_like": json_values, "form_data": objects | json_values},
        )
    return (
        shaped.map(lambda value: json.dumps(value).encode())
        | json_values.map(lambda value: json.dumps(value).encode())
        | st.binary(max_size=200)
        | st.sampled_from(edge_bodies(path, conversation))
    )


def headers_for(conversation: Conversation) -> st.SearchStrategy[dict[bytes, bytes]]:
    valid_cookie = f"{COOKIE}={conversation.cookie}"
    choices = {
        "content-type": st.sampled_from(["application/json", "text/plain", "multipart/form-data"])
        | header_text,
        "accept": st.sampled_from(["text/event-stream", "*/*", "text/event-stream;q=0, */*"])
        | header_text,
        "authorization": st.sampled_from([f"Bearer {API_KEY}", f"bearer  {API_KEY} ", "Bearer"])
        | header_text,
        "cookie": st.sampled_from([valid_cookie, f"{valid_cookie}x", f"{COOKIE}=; {valid_cookie}"])
        | header_text.map(lambda text: f"{COOKIE}={text}")
        | header_text,
        "x-forwarded-proto": header_text,
        "x-anything": header_text,
    }
    # HTTP has no leading or trailing blanks in a header value: httpx would refuse to send them.
    encoded = {
        name.encode(): value.map(lambda text: text.strip().encode("latin-1"))
        for name, value in choices.items()
    }
    return st.fixed_dictionaries({}, optional=encoded)


ROUTES = [
    ("GET", "/"),
    ("GET", "/static/{name}"),
    ("POST", "/chat_stream"),
    ("GET", "/chat_stream/{message_id}"),
    ("POST", "/stop_generation"),
    ("GET", "/get_prompt"),
    ("POST", "/clear_context"),
    ("POST", "/set_generation_params"),
    ("GET", "/get_generation_params"),
    ("POST", "/set_feedback"),
    ("GET", "/conversations"),
    ("POST", "/conversations"),
    ("GET", "/conversations/{conversation_id}"),
    ("PATCH", "/conversations/{conversation_id}"),
    ("DELETE", "/conversations/{conversation_id}"),
    ("GET", "/get_load"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"),
]


def test_the_routes_cover_the_whole_api(target: Target) -> None:
    with target.client() as client:
        schema = client.get("/openapi.json").json()
    served = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    assert served == set(ROUTES)


def assert_answered_properly(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code < 500, response.text
    assert elapsed < TIMEOUT
    # Errors are JSON (uvicorn's own answers to malformed HTTP are plain text); none is HTML, so
    # nothing echoed from the request can become markup in a browser.
    media_type = response.headers.get("content-type", "")
    assert not media_type.startswith("text/html") or response.status_code == 200
    if response.status_code >= 400 and media_type == "application/json":
        error = response.json()["error"]
        assert isinstance(error["code"], str)
        assert isinstance(error["message"], str)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_any_body_headers_and_cookies(
    target: Target, conversation: Conversation, method: str, path: str
) -> None:
    with target.client() as client:

        @FUZZ
        @given(
            body=body_for(path, conversation) if method in ("POST", "PATCH") else st.just(b""),
            headers=headers_for(conversation),
        )
        def request(body: bytes, headers: dict[bytes, bytes]) -> None:
            started = time.monotonic()
            response = client.request(
                method, conversation.path(path), content=body, headers=headers
            )
            assert_answered_properly(response, time.monotonic() - started)

        request()
    assert_healthy(target.server, target.redis)


@pytest.mark.parametrize("path", EDGE_TEMPLATES)
def test_edge_bodies(target: Target, conversation: Conversation, path: str) -> None:
    headers = {
        "cookie": f"{COOKIE}={conversation.cookie}",
        "authorization": f"Bearer {API_KEY}",
        "content-type": "application/json",
    }
    with target.client() as client:
        for body in edge_bodies(path, conversation):
            started = time.monotonic()
            method = "PATCH" if "{" in path else "POST"
            response = client.request(
                method, conversation.path(path), content=body, headers=headers
            )
            assert_answered_properly(response, time.monotonic() - started)
    assert_healthy(target.server, target.redis)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_against_the_openapi_schema(target: Target, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{target.server.url}/openapi.json")
    headers = {"authorization": f"Bearer {API_KEY}"}

    @settings(FUZZ, max_examples=300)
    @given(case=schema.as_strategy(generation_mode=mode))
    def request(case: schemathesis.Case[Any]) -> None:
        started = time.monotonic()
        response = case.call(base_url=target.server.url, headers=headers, timeout=TIMEOUT)
        assert response.status_code < 500, case.as_curl_command()
        assert time.monotonic() - started < TIMEOUT

    request()
    assert_healthy(target.server, target.redis)


# -- bodies over the limit -------------------------------------------------------------------

LIMITS = {
    "/chat_stream": 256 * 1024,
    "/v1/chat/completions": 256 * 1024,
    "/set_generation_params": 64 * 1024,
    "/set_feedback": 64 * 1024,
}


def raw_post(port: int, path: str, head: str, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {API_KEY}\r\n{head}\r\n".encode()
        + body
    )
    return sock


def read_status(sock: socket.socket) -> int:
    received = b""
    while b"\r\n" not in received:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection without an answer"
        received += chunk
    return int(received.split(b" ", 2)[1])


@pytest.mark.parametrize("path", LIMITS)
def test_a_declared_oversized_body_is_refused_before_it_is_sent(target: Target, path: str) -> None:
    """``Content-Length`` over the limit: 413 at once, though not one byte of the body came."""
    with raw_post(target.server.port, path, f"Content-Length: {LIMITS[path] + 1}\r\n", b"") as sock:
        assert read_status(sock) == 413


@pytest.mark.parametrize("path", LIMITS)
def test_a_chunked_body_is_refused_once_past_the_limit(target: Target, path: str) -> None:
    """Without a length, the body is read only up to the limit: the 413 comes while the client
    still has far more to send (it never sends the end of the body)."""
    chunk = b"x" * 16384
    with raw_post(target.server.port, path, "Transfer-Encoding: chunked\r\n", b"") as sock:
        sent = 0
        while sent <= LIMITS[path]:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        assert read_status(sock) == 413
