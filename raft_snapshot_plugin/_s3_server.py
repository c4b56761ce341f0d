"""moto's standalone S3 server (``python -m moto.server``, from PyPI's ``moto[server]``) as a process.

The conformance kit's ``snapshot_s3`` fixture (and :class:`S3Server` itself, a context manager)
give adapter tests a real S3 to store snapshots and segments in: s3fs talks to it over real HTTP on
127.0.0.1, never through in-process mocking. ``auth=True`` starts it with
``INITIAL_NO_AUTH_ACTION_COUNT=0``: then moto checks every request's credentials against its
IAM, so any key the tests use is refused (access denied).

Outages, for the tests that need them: :meth:`S3Server.pause` stops the process (SIGSTOP: the
kernel still accepts connections, nobody answers) until :meth:`S3Server.resume`;
:meth:`S3Server.kill` kills it (connections refused) and :meth:`S3Server.start` starts it again
on the same port. moto keeps its buckets in memory, so ``persist=True`` turns on moto's
recorder (every request appended to a file) and :meth:`S3Server.start` replays it: the restarted
server holds what the killed one held, as a real store does after a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any

from .ports import free_ports

__all__ = ["S3Server"]

ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"


class S3Server:
    """``python -m moto.server -H 127.0.0.1 -p PORT`` until :meth:`stop`."""

    def __init__(self, *, auth: bool = False, wait: float = 30.0, persist: bool = False) -> None:
        self.port = free_ports(1)[0]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.wait = wait
        self._server_env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}
        if auth:
            self._server_env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self.recording: str | None = None
        if persist:
            fd, self.recording = tempfile.mkstemp(prefix="moto-recording-")
            os.close(fd)
            self._server_env.update(MOTO_ENABLE_RECORDING="True", MOTO_RECORDER_FILEPATH=self.recording)
        self.process = self._launch()

    def _launch(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=self._server_env,
        )
        deadline = time.monotonic() + self.wait
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    _end(process)
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        return process

    def pause(self) -> None:
        """SIGSTOP the server: connections are accepted by the kernel, never answered."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server: connections to its port are refused until :meth:`start`."""
        self.process.kill()
        self.process.wait(30)

    def start(self) -> None:
        """Start the killed server again on its port, replaying its recording if it keeps one."""
        self.process = self._launch()
        if self.recording is not None:
            request = urllib.request.Request(
                f"{self.endpoint}/moto-api/recorder/replay-recording", method="POST")
            with urllib.request.urlopen(request, timeout=120):
                pass

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

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """End the server (resumed first if paused) and remove its recording."""
        if self.process.poll() is None:
            self.resume()  # a stopped process takes no SIGTERM
        _end(self.process)
        if self.recording is not None and os.path.exists(self.recording):
            os.unlink(self.recording)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
