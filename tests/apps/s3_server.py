"""moto's standalone S3 server (``python -m moto.server``, from PyPI's ``moto[server]``) as a process.

The agent's tests talk to it through s3fs over real HTTP on 127.0.0.1, never through in-process
mocking. ``auth=True`` starts it with ``INITIAL_NO_AUTH_ACTION_COUNT=0``: then moto checks every
request's credentials against its IAM, so any key the tests use is refused (access denied).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """``python -m moto.server -H 127.0.0.1 -p PORT`` until :meth:`stop`."""

    def __init__(self, *, auth: bool = False, wait: float = 30.0) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
               "AWS_DEFAULT_REGION": "us-east-1"}
        if auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + wait
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)

    def create_bucket(self, name: str, *, object_lock: bool = False) -> None:
        """Create a bucket with a plain unsigned PUT (moto without auth accepts it);
        ``object_lock``: with S3 Object Lock enabled (and so versioning), as
        ``ObjectLockEnabledForBucket=True`` does."""
        headers = {"x-amz-bucket-object-lock-enabled": "true"} if object_lock else {}
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT", headers=headers)
        with urllib.request.urlopen(request, timeout=10):
            pass

    def options(self, **extra: Any) -> dict[str, Any]:
        """s3fs storage options for this server."""
        return {"key": ACCESS_KEY, "secret": SECRET_KEY, "skip_instance_cache": True,
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
                "config_kwargs": {"connect_timeout": 2, "read_timeout": 10,
                                  "retries": {"max_attempts": 1}},
                **extra}

    def env(self) -> dict[str, str]:
        """Environment for a process whose s3fs should use this server (botocore reads these)."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
