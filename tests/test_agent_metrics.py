"""The agent's metrics: a registry per agent, the ASGI app an endpoint can mount, the listener."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from raft_snapshot_plugin.agent import Agent, metrics_asgi_app
from raft_snapshot_plugin.agent.metrics import parse_address
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.testing import MemoryCluster


def asgi_get(app: Any, path: str = "/") -> tuple[int, bytes]:
    """One GET through an ASGI app, as an ASGI server would make it."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_each_agent_has_its_own_registry_and_an_asgi_app(
    memory_manager: PluginManager, tmp_path: Path,
) -> None:
    cluster = MemoryCluster(1, name="metrics")
    cluster.nodes[0].set("k", "v")
    first = Agent(cluster.nodes[0], str(tmp_path / "a"), manager=memory_manager)
    second = Agent(cluster.nodes[0], str(tmp_path / "b"), manager=memory_manager)
    assert first.run_once() is not None
    status, body = asgi_get(metrics_asgi_app(first.metrics))
    assert status == 200
    assert b'raft_snapshot_agent_rounds_total{result="stored"} 1.0' in body
    assert b"raft_snapshot_agent_snapshots_in_storage 1.0" in body
    _, other = asgi_get(metrics_asgi_app(second.metrics))
    assert b'raft_snapshot_agent_rounds_total{result="stored"} 0.0' in other


def test_the_listener_serves_while_the_agent_runs(memory_manager: PluginManager,
                                                  tmp_path: Path) -> None:
    cluster = MemoryCluster(1, name="listener")
    agent = Agent(cluster.nodes[0], str(tmp_path / "s"), manager=memory_manager,
                  metrics_address="127.0.0.1:0", interval=3600)
    agent.start()
    try:
        assert agent.metrics_url is not None
        with urllib.request.urlopen(agent.metrics_url, timeout=10) as response:
            assert b"raft_snapshot_agent_last_success_timestamp_seconds" in response.read()
    finally:
        agent.stop()
    assert agent.metrics_url is None


@pytest.mark.parametrize("bad", ["9102", ":9102", "host:port", "h:70000"])
def test_metrics_address_is_host_and_port(bad: str) -> None:
    assert parse_address("[::1]:9102") == ("::1", 9102)
    with pytest.raises(ValueError, match="host:port"):
        parse_address(bad)


def test_a_restarted_agent_starts_its_series_from_its_status_file(
    memory_manager: PluginManager, tmp_path: Path,
) -> None:
    cluster = MemoryCluster(1, name="restart")
    first = Agent(cluster.nodes[0], str(tmp_path / "s"), manager=memory_manager,
                  state_dir=tmp_path / "state")
    assert first.run_once() is not None
    again = Agent(cluster.nodes[0], str(tmp_path / "s"), manager=memory_manager,
                  state_dir=tmp_path / "state")
    value = again.metrics.registry.get_sample_value(
        "raft_snapshot_agent_last_success_timestamp_seconds")
    assert value == first.status().last_success


def test_the_endpoint_app_serves_the_agents_metrics_beside_the_snapshots(
    memory_manager: PluginManager, tmp_path: Path
) -> None:
    """``snapshot_app(..., metrics=...)``: one port, one app; ``/metrics`` moves with the agent,
    while ``/v1/snapshot`` still wants its token."""
    import httpx

    from raft_snapshot_plugin._server import start
    from raft_snapshot_plugin.endpoint import snapshot_app

    cluster = MemoryCluster(3, name="mounted")
    cluster.nodes[0].set("k", "v")
    agent = Agent(cluster.nodes[0], str(tmp_path / "s"), manager=memory_manager)
    app = snapshot_app(cluster.nodes[0], token="t", manager=memory_manager,
                       metrics=metrics_asgi_app(agent.metrics))
    server = start(app, host="127.0.0.1", port=0, max_connections=16, certfile=None,
                   keyfile=None, client_cafile=None)
    try:
        def scrape() -> str:
            answer = httpx.get(f"{server.url}/metrics/", timeout=10)
            assert answer.status_code == 200
            return answer.text

        before = scrape()
        assert agent.run_once() is not None
        after = scrape()
        assert before != after and "raft_snapshot_agent" in after
        assert httpx.get(f"{server.url}/v1/snapshot", timeout=10).status_code == 401
    finally:
        server.close()
