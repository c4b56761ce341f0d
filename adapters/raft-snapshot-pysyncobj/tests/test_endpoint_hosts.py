"""The endpoint mounted in the application's own web server, beside its own routes: a Starlette
application (on uvicorn) and a Flask one (WSGI, through a2wsgi, on werkzeug's server) save and
restore a real 3-node PySyncObj cluster through the command line. And a follower names the
leader's endpoint when the nodes were told each other's URLs (``advertise=``)."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

from a2wsgi import ASGIMiddleware
from cluster import Cluster, fill, put_note, running_cluster
from flask import Flask
from hosts import TOKEN, asgi_host, cli, remote, wsgi_host
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.endpoint import SnapshotServer, serve, snapshot_app


def _own_route(base: str) -> str:
    with urllib.request.urlopen(f"{base}/hello", timeout=10) as answer:
        return str(answer.read().decode())


def _round_trip(cluster: Cluster, addr: str, tmp_path: Path) -> None:
    """Save through ``addr``, change the state, restore through ``addr``: every node is back."""
    fill(cluster, 10)
    before = cluster.states()
    archive = tmp_path / "host.snap"
    done = cli("save", str(archive), *remote(addr))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert rsp.verify(archive).backend == "pysyncobj"
    put_note(cluster, "after the save")
    assert cluster.states() != before
    done = cli("restore", str(archive), *remote(addr))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.startswith("Restored snapshot ")
    assert cluster.states() == before


def test_a_starlette_application_mounts_the_endpoint(tmp_path: Path) -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello from the application")

    with running_cluster(3) as cluster:
        app = Starlette(routes=[
            Route("/hello", hello),
            Mount("/", app=snapshot_app(cluster.leader(), token=TOKEN)),
        ])
        with asgi_host(app) as base:
            assert _own_route(base) == "hello from the application"
            _round_trip(cluster, base, tmp_path)
            assert _own_route(base) == "hello from the application"


def test_a_flask_application_mounts_the_endpoint_through_a2wsgi(tmp_path: Path) -> None:
    flask_app = Flask("bank")

    @flask_app.get("/hello")
    def hello() -> str:
        return "hello from flask"

    with running_cluster(3) as cluster:
        # a2wsgi's types name its own ASGI protocol, not Starlette's: the same thing
        endpoint: Any = ASGIMiddleware(snapshot_app(cluster.leader(), token=TOKEN))  # type: ignore[arg-type]
        flask_app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
            flask_app.wsgi_app, {"/raft": endpoint})
        with wsgi_host(flask_app) as base:
            assert _own_route(base) == "hello from flask"
            _round_trip(cluster, f"{base}/raft", tmp_path)  # under a path prefix, too
            assert _own_route(base) == "hello from flask"


def test_a_follower_names_the_leaders_endpoint(tmp_path: Path) -> None:
    with running_cluster(3) as cluster:
        leader = cluster.leader()
        urls: dict[str, str] = {}  # every node's endpoint by Raft address, filled as they start
        servers: list[SnapshotServer] = []
        try:
            for node in cluster.running:
                server = serve(node, token=TOKEN, advertise=urls)
                servers.append(server)
                urls[node.selfNode.address] = server.url
            follower = cluster.follower()
            done = cli("save", str(tmp_path / "f.snap"), *remote(urls[follower.selfNode.address]))
            assert done.returncode == 1 and "Traceback" not in done.stderr
            line = done.stderr.strip()
            leader_url = urls[leader.selfNode.address]
            assert f"save from the leader (--addr {leader_url})" in line, line
            assert f"the leader is {leader.selfNode.address}" in line and "--stale" in line
            assert "?stale" not in line
            done = cli("save", str(tmp_path / "l.snap"), *remote(leader_url))
            assert done.returncode == 0, done.stderr
        finally:
            for server in servers:
                server.close()
