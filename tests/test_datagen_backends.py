"""The OpenAI-compatible HTTP backend against a loopback server that replays scripted answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmseg.datagen.backends import GenerationSettings, OpenAIBackend, RateLimiter, RequestFailed, retry_after_seconds

SETTINGS = GenerationSettings(max_tokens=16, temperature=0.0)
MESSAGES = [{"role": "user", "content": "hi"}]


class ReplayServer:
    """Answers POSTs with the queued (status, headers, body) in order; records each request."""

    def __init__(self) -> None:
        self.queue: list[tuple[int, dict[str, str], str]] = []
        self.requests: list[tuple[str, dict[str, str], dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, dict(self.headers), body))
                status, headers, text = server.queue.pop(0)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(text.encode())))
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def completion(self, text: str, prompt_tokens: int = 11, completion_tokens: int = 5) -> None:
        body = {
            "model": "scripted-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        }
        self.queue.append((200, {"Content-Type": "application/json"}, json.dumps(body)))

    def error(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.queue.append((status, headers or {}, json.dumps({"error": {"message": f"status {status}"}})))


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    replay = ReplayServer()
    yield replay
    replay.httpd.shutdown()
    replay.httpd.server_close()


def _backend(server: ReplayServer, sleeps: list[float], **kwargs) -> OpenAIBackend:
    return OpenAIBackend(server.base, "scripted", "sk-test", backoff=0.01, sleep=sleeps.append, **kwargs)


def test_a_completion_returns_text_usage_and_sends_model_settings_and_key(server: ReplayServer) -> None:
    server.completion("hello", prompt_tokens=7, completion_tokens=3)
    completion = _backend(server, [], json_mode=True).complete(MESSAGES, SETTINGS)
    assert (completion.text, completion.prompt_tokens, completion.completion_tokens) == ("hello", 7, 3)
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "scripted" and body["messages"] == MESSAGES
    assert (body["max_tokens"], body["temperature"]) == (16, 0.0)
    assert body["response_format"] == {"type": "json_object"}


def test_429_waits_at_least_retry_after_then_succeeds(server: ReplayServer) -> None:
    server.error(429, {"Retry-After": "7"})
    server.completion("ok")
    sleeps: list[float] = []
    backend = _backend(server, sleeps)
    assert backend.complete(MESSAGES, SETTINGS).text == "ok"
    assert len(server.requests) == 2 and backend.retries == 1
    assert sleeps == [pytest.approx(7.0)]


def test_5xx_backs_off_exponentially_and_gives_up_after_max_retries(server: ReplayServer) -> None:
    for _ in range(3):
        server.error(503)
    sleeps: list[float] = []
    with pytest.raises(RequestFailed, match="after 3 attempts"):
        _backend(server, sleeps, max_retries=2).complete(MESSAGES, SETTINGS)
    assert len(server.requests) == 3
    # jittered in [0.5, 1] x 0.01 * 2**attempt
    assert 0.005 <= sleeps[0] <= 0.01 and 0.01 <= sleeps[1] <= 0.02


def test_a_bad_request_fails_at_once_and_bad_credentials_are_a_user_error(server: ReplayServer) -> None:
    server.error(400)
    with pytest.raises(RequestFailed, match="HTTP 400"):
        _backend(server, []).complete(MESSAGES, SETTINGS)
    assert len(server.requests) == 1
    server.error(401)
    with pytest.raises(ValueError, match="LLMSEG_API_KEY"):
        _backend(server, []).complete(MESSAGES, SETTINGS)


def test_a_200_without_a_completion_is_a_failed_request(server: ReplayServer) -> None:
    server.queue.append((200, {}, "not json"))
    with pytest.raises(RequestFailed, match="without a chat completion"):
        _backend(server, []).complete(MESSAGES, SETTINGS)


def test_rate_limiter_spaces_request_starts() -> None:
    sleeps: list[float] = []
    limiter = RateLimiter(requests_per_minute=120, sleep=sleeps.append)
    for _ in range(3):
        limiter.acquire()
    # the fake sleep does not advance time: each start waits one more 0.5 s interval
    assert sleeps == [pytest.approx(0.5, abs=0.05), pytest.approx(1.0, abs=0.05)]


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_configuration_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="http"):
        OpenAIBackend("localhost:8000/v1", "m")
    with pytest.raises(ValueError, match="model"):
        OpenAIBackend("http://localhost:8000/v1", "")
    with pytest.raises(ValueError, match="rpm"):
        RateLimiter(0)
