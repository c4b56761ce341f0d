"""The endpoint's log: one printable line per answer, a refusal with its reason and the client's
address, whatever bytes the client sent."""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest

from raft_snapshot_plugin.endpoint import serve
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.memory import MemoryCluster

TOKEN = "log-test-token"
LOGGER = "raft_snapshot_plugin.endpoint"


@pytest.fixture
def url(memory_manager: PluginManager) -> Iterator[str]:
    node = MemoryCluster(3, name="logs").nodes[0]
    node.set("k", "v")
    server = serve(node, token=TOKEN, manager=memory_manager)
    try:
        yield server.url
    finally:
        server.close()


def _lines(caplog: pytest.LogCaptureFixture, needle: str, timeout: float = 5.0) -> list[str]:
    """The endpoint's log lines holding ``needle`` (waiting a little: the server is a thread)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r.getMessage() for r in caplog.records
                 if r.name == LOGGER and needle in r.getMessage()]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_tls_client_on_a_plain_port_is_logged_in_printable_words(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    host, port = url.removeprefix("http://").split(":")
    context = ssl.create_default_context()
    with socket.create_connection((host, int(port)), timeout=5) as raw, pytest.raises(
        (ssl.SSLError, OSError)
    ):
        context.wrap_socket(raw, server_hostname="localhost")  # a ClientHello: binary bytes
    refused = _lines(caplog, "refused 400")
    assert refused and "127.0.0.1" in refused[0] and "malformed request" in refused[0]
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert all(m.isprintable() for m in messages), messages


def test_each_answer_is_one_line_and_a_refusal_gives_its_reason(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    answer = httpx.put(f"{url}/v1/snapshot", content=b"x",
                       headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert answer.status_code == 403
    assert _lines(caplog, "PUT /v1/snapshot 403: wrong token")[0].startswith("127.0.0.1 ")
    # %1B: the server decodes it into an ESC character
    answer = httpx.get(f"{url}/v1/snap%1Bshot", headers={"Authorization": f"Bearer {TOKEN}"},
                       timeout=10)
    assert answer.status_code == 404
    (line,) = _lines(caplog, " 404: no such endpoint")
    assert line.isprintable() and "\n" not in line
    answer = httpx.get(f"{url}/v1/snapshot", headers={"Authorization": f"Bearer {TOKEN}"},
                       timeout=10)
    assert answer.status_code == 200
    assert _lines(caplog, "127.0.0.1 GET /v1/snapshot 200")
