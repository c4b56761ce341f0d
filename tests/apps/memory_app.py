"""A real application process: a 3-node MemoryCluster, each node serving the snapshot endpoint.

Run by the tests as ``python memory_app.py --token T [options]``. It writes a few keys through the
leader, starts one ``raft_snapshot_plugin.endpoint.serve`` per node (the reference backend registered in
the manager it passes), and prints one JSON line on stdout::

    {"leader": URL, "followers": [URL, URL], "leader_address": "memory://app/0", "state": URL}

It serves until its stdin closes, then stops everything and exits 0.

``state`` is this script's own test-only HTTP server (not the library's), without a token:
``GET /state`` gives every node's applied index and data (values over 64 characters as their
sha256), ``POST /set?key=K&value=V`` writes through the leader.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import json
import logging
import os
import sys
import threading
import urllib.parse
from typing import Any

from raft_snapshot_plugin.endpoint import DEFAULT_MAX_UPLOAD_BYTES, SnapshotServer, serve
from raft_snapshot_plugin.manager import get_plugin_manager
from raft_snapshot_plugin.testing import MEMORY_BACKEND, MemoryCluster, MemoryNode, MemoryPlugin


def describe(node: MemoryNode) -> dict[str, Any]:
    with node.cluster.lock:
        data = {k: v if len(v) <= 64 else "sha256:" + hashlib.sha256(v.encode()).hexdigest()
                for k, v in node.data.items()}
        return {"id": node.id, "applied": node.applied, "data": data}


def state_server(cluster: MemoryCluster) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path != "/state":
                self._answer(404, {"error": "no such route"})
                return
            self._answer(200, {"nodes": [describe(n) for n in cluster.nodes]})

        def do_POST(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
            if url.path != "/set" or "key" not in query or "value" not in query:
                self._answer(404, {"error": "no such route"})
                return
            assert cluster.leader is not None
            index = cluster.leader.set(query["key"][0], query["value"][0])
            self._answer(200, {"index": index})

        def log_message(self, format: str, *args: Any) -> None:
            logging.getLogger("memory_app.state").debug(format, *args)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", required=True)
    parser.add_argument("--keys", type=int, default=20, help="keys written at start")
    parser.add_argument("--fill-bytes", type=int, default=0,
                        help="also write one key holding this many bytes of incompressible text")
    parser.add_argument("--max-upload", type=int, default=DEFAULT_MAX_UPLOAD_BYTES)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    manager = get_plugin_manager()
    manager.register(MemoryPlugin(), name=MEMORY_BACKEND)
    cluster = MemoryCluster(3, name="app")
    leader = cluster.nodes[0]
    for i in range(args.keys):
        leader.set(f"key{i:03d}", f"value {i}")
    if args.fill_bytes:
        raw = os.urandom(args.fill_bytes * 3 // 4 + 3)
        leader.set("fill", base64.b64encode(raw).decode()[: args.fill_bytes])

    servers: list[SnapshotServer] = [
        serve(node, token=args.token, manager=manager, max_upload_bytes=args.max_upload,
              certfile=args.certfile, keyfile=args.keyfile)
        for node in cluster.nodes
    ]
    state = state_server(cluster)
    try:
        print(json.dumps({
            "leader": servers[0].url,
            "followers": [s.url for s in servers[1:]],
            "leader_address": leader.address,
            "state": f"http://127.0.0.1:{state.server_address[1]}",
        }), flush=True)
        sys.stdin.read()  # until the test closes our stdin
    finally:
        closing = [threading.Thread(target=s.close) for s in servers]
        closing.append(threading.Thread(target=state.shutdown))
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join(10)
        state.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
