"""The snapshot agent: rounds, dedup, naming, retention, storage (local, memory, S3), status, CLI.

The node is the reference backend (``MemoryCluster``); the PySyncObj cluster tests live in the
adapter's ``tests/test_agent_cluster.py``. S3 is moto's standalone server (``python -m moto.server``
from ``moto[server]``) in its own process on 127.0.0.1, reached by s3fs over HTTP.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
import pytest

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import hookimpl
from raft_snapshot_plugin.agent import (
    NAME_PATTERN,
    Agent,
    AgentStatus,
    Retention,
    StoredSnapshot,
    download,
    list_snapshots,
    load_config,
    object_name,
    retained,
)
from raft_snapshot_plugin.cli import main
from raft_snapshot_plugin.endpoint import serve
from raft_snapshot_plugin.errors import StorageError
from raft_snapshot_plugin.manager import PluginManager, get_plugin_manager
from raft_snapshot_plugin.testing import MEMORY_BACKEND, MemoryCluster, MemoryNode, MemoryPlugin, S3Server

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
TOKEN = "agent-test-token"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def manager(memory_manager: PluginManager) -> PluginManager:
    return memory_manager


@pytest.fixture
def cluster() -> MemoryCluster:
    c = MemoryCluster(3, name="agent")
    c.nodes[0].set("greeting", "hello")
    return c


@pytest.fixture
def memory_url(request: pytest.FixtureRequest) -> Iterator[str]:
    url = f"memory://agent-tests/{request.node.name}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def agent_for(node: object, url: str, manager: PluginManager, **kwargs: Any) -> Agent:
    kwargs.setdefault("clock", Clock())
    kwargs.setdefault("backoff", 0.0)
    return Agent(node, url, manager=manager, **kwargs)


def stored_names(url: str, **options: Any) -> list[str]:
    return [s.name for s in list_snapshots(url, options)]


# --- rounds --------------------------------------------------------------------------------------

def test_only_the_leader_stores_and_the_name_says_when_and_what(
    cluster: MemoryCluster, manager: PluginManager, memory_url: str
) -> None:
    clock = Clock()
    agents = [agent_for(n, memory_url, manager, clock=clock) for n in cluster.nodes]
    results = [a.run_once() for a in agents]
    assert results[1:] == [None, None]
    index = cluster.nodes[0].applied
    assert results[0] is not None
    prefix = f"memory:///agent-tests/{memory_url.rsplit('/', 1)[1]}/"
    name = results[0].removeprefix(prefix)
    assert re.fullmatch(rf"20231114T221320Z-{index}-[0-9a-f]{{6}}\.snap", name), name
    assert stored_names(memory_url) == [name]
    with fsspec.open(results[0], "rb") as f:
        meta = rsp.verify(f)
    assert meta.index == index and meta.backend == MEMORY_BACKEND
    # a follower's agent with stale=True stores too, and the name, the listing and the archive
    # say that its snapshot was read on a follower
    clock.now += 60
    cluster.nodes[0].set("more", "x")
    stale_url = agent_for(cluster.nodes[2], memory_url, manager, clock=clock, stale=True).run_once()
    assert stale_url is not None and stale_url.endswith("-stale.snap")
    assert [s.stale for s in list_snapshots(memory_url)] == [False, True]
    with fsspec.open(stale_url, "rb") as f:
        assert rsp.verify(f).stale



class _LosesLeadership(MemoryPlugin):
    """The reference backend, except that a take hands the leadership to another node."""

    name = "losing"

    @hookimpl
    def raft_snapshot_take(self, node: MemoryNode, sink: IO[bytes]) -> rsp.SnapshotMeta:
        meta = super().raft_snapshot_take(node, sink)
        node.cluster.elect(node.cluster.nodes[1])
        return meta


def test_leadership_lost_during_the_take_skips_the_round(
    cluster: MemoryCluster, memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The take's state may be the new leader's only if it still leads: nothing is stored."""
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(_LosesLeadership(), name=_LosesLeadership.name)
    agent = agent_for(cluster.nodes[0], memory_url, pm)
    with caplog.at_level("INFO", logger="raft_snapshot_plugin.agent"):
        assert agent.run_once() is None
    assert "lost the leadership during the take" in caplog.text
    assert stored_names(memory_url) == []
    assert agent.status().healthy and agent.status().consecutive_failures == 0

def test_unchanged_state_is_not_stored_twice_even_across_restarts_and_agents(
    cluster: MemoryCluster, manager: PluginManager, memory_url: str, tmp_path: Path
) -> None:
    clock = Clock()
    state = tmp_path / "state"
    leader = cluster.nodes[0]
    assert agent_for(leader, memory_url, manager, clock=clock, state_dir=state).run_once()
    clock.now += 3600
    assert agent_for(leader, memory_url, manager, clock=clock, state_dir=state).run_once() is None
    recorded = json.loads((state / "stored.json").read_text())
    assert recorded["name"] == stored_names(memory_url)[0] and len(recorded["state_sha256"]) == 64
    # a failover appends a no-op entry: a new index, the same state; the new leader's agent reads
    # the newest stored snapshot's hash from the store and skips too
    cluster.elect(cluster.nodes[1])
    assert agent_for(cluster.nodes[1], memory_url, manager, clock=clock).run_once() is None
    cluster.nodes[1].set("greeting", "changed")
    clock.now += 3600
    assert agent_for(cluster.nodes[1], memory_url, manager, clock=clock).run_once()
    assert len(stored_names(memory_url)) == 2


def test_an_emptied_store_gets_a_snapshot_again(
    cluster: MemoryCluster, manager: PluginManager, memory_url: str, tmp_path: Path
) -> None:
    agent = agent_for(cluster.nodes[0], memory_url, manager, state_dir=tmp_path / "s")
    first = agent.run_once()
    assert first is not None
    fsspec.filesystem("memory").rm(first)
    assert agent.run_once() is not None


def test_foreign_objects_are_neither_listed_nor_deleted(
    cluster: MemoryCluster, manager: PluginManager, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    foreign = ["notes.txt", "20231114T221320Z-1.snap.bak", ".tmp-abc-20231114T221320Z-1.snap"]
    for name in foreign:
        (store / name).write_text("not a snapshot")
    clock = Clock()
    agent = agent_for(cluster.nodes[0], str(store), manager, clock=clock,
                      retention=Retention(keep=1, hourly=0, daily=0))
    for i in range(3):
        cluster.nodes[0].set("k", str(i))
        clock.now += 3600
        assert agent.run_once()
    snaps = sorted(p.name for p in store.iterdir() if NAME_PATTERN.match(p.name))
    assert len(snaps) == 1 and [s.name for s in agent.list()] == snaps
    assert sorted(p.name for p in store.iterdir() if not NAME_PATTERN.match(p.name)) == sorted(foreign)
    assert all(p.stat().st_size > 0 for p in store.iterdir())


def test_a_failed_move_leaves_no_object(
    cluster: MemoryCluster, manager: PluginManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    fs_class = type(fsspec.filesystem("file"))

    def broken_mv(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fs_class, "mv", broken_mv)
    agent = agent_for(cluster.nodes[0], str(store), manager, retries=2)
    with pytest.raises(StorageError, match="No space left"):
        agent.run_once()
    assert list(store.iterdir()) == []  # neither a final name nor the .tmp- object


# --- retention ------------------------------------------------------------------------------------

def expected_kept(times: list[float], now: float, keep: int, hourly: int, daily: int) -> set[str]:
    """Retention computed independently: calendar hours and days of datetimes, no integer buckets."""
    utc = dt.timezone.utc

    def when(t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, utc)

    names = {t: when(t).strftime("%Y%m%dT%H%M%SZ") for t in times}
    newest_first = sorted(times, reverse=True)
    kept = {names[t] for t in newest_first[: max(keep, 1)]}
    this_hour = when(now).replace(minute=0, second=0, microsecond=0)
    for k in range(hourly):
        start = this_hour - dt.timedelta(hours=k)
        inside = [t for t in times if start <= when(t) < start + dt.timedelta(hours=1)]
        if inside:
            kept.add(names[max(inside)])
    today = when(now).replace(hour=0, minute=0, second=0, microsecond=0)
    for k in range(daily):
        start = today - dt.timedelta(days=k)
        inside = [t for t in times if start <= when(t) < start + dt.timedelta(days=1)]
        if inside:
            kept.add(names[max(inside)])
    return kept


def test_a_simulated_week_of_hourly_rounds_keeps_exactly_the_retention_set(
    cluster: MemoryCluster, manager: PluginManager, memory_url: str
) -> None:
    clock = Clock(T0)
    retention = Retention(keep=5, hourly=24, daily=7)
    agent = agent_for(cluster.nodes[0], memory_url, manager, clock=clock, retention=retention)
    times = []
    for hour in range(24 * 9):  # nine days, so whole days fall out of the daily window
        clock.now = T0 + hour * 3600 + (hour * 7919) % 1800  # jitter within the hour
        if hour % 5 != 4:  # some rounds see no change and store nothing
            cluster.nodes[0].set("tick", str(hour))
            assert agent.run_once() is not None
            times.append(clock.now)
        else:
            assert agent.run_once() is None
    names = {n.split("-")[0] for n in stored_names(memory_url)}
    assert names == expected_kept(times, clock.now, 5, 24, 7)
    assert len(names) < len(times)


def test_retention_never_deletes_the_newest() -> None:
    snaps = [StoredSnapshot(object_name(T0 - i * 86400 * 30, i), "", "", int(T0) - i * 86400 * 30, i)
             for i in range(1, 4)]
    assert retained(snaps, T0, Retention(keep=0, hourly=0, daily=0)) == {snaps[0].name}
    assert retained([], T0, Retention()) == set()
    with pytest.raises(ValueError, match="keep"):
        Retention(keep=-1)


# --- failures, status, the background thread -------------------------------------------------------

def test_failures_count_against_the_budget_and_the_status_file_says_so(
    cluster: MemoryCluster, manager: PluginManager, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the store's folder should be")
    state = tmp_path / "state"
    clock = Clock()
    agent = agent_for(cluster.nodes[0], str(blocker / "store"), manager, clock=clock,
                      state_dir=state, max_failures=2, retries=3)
    for failures in (1, 2):
        clock.now += 3600
        with pytest.raises(StorageError):
            agent.run_once()
        status = AgentStatus.from_dict(json.loads((state / "status.json").read_text()))
        assert status.consecutive_failures == failures
        assert status.healthy is (failures < 2)
        assert status.last_error and status.last_success is None
    assert agent.status().healthy is False
    # a restarted agent reads the status back; a good round makes it healthy again
    blocker.unlink()
    agent = agent_for(cluster.nodes[0], str(blocker / "store"), manager, clock=clock, state_dir=state)
    assert agent.status().consecutive_failures == 2
    assert agent.run_once()
    status = agent.status()
    assert status.to_dict() == json.loads((state / "status.json").read_text())
    assert status.healthy is True and status.consecutive_failures == 0
    assert status.last_success == clock.now and status.stored == 1
    assert {"healthy", "last_success", "last_error", "next_run", "stored",
            "consecutive_failures"} <= set(status.to_dict())



def test_a_damaged_status_file_is_read_for_what_it_still_says(
    cluster: MemoryCluster, manager: PluginManager, memory_url: str, tmp_path: Path
) -> None:
    """Unknown keys and values of the wrong type are dropped, never carried into the next round."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_text(json.dumps(
        {"stored": None, "consecutive_failures": "2", "healthy": False, "from_a_newer_agent": 1}))
    agent = agent_for(cluster.nodes[0], memory_url, manager, state_dir=state)
    assert agent.status() == AgentStatus(healthy=False, interval=3600.0)
    assert agent.run_once()
    assert agent.status().stored == 1 and agent.status().healthy
    assert set(AgentStatus().to_dict()) == {
        "healthy", "last_success", "last_error", "last_error_at", "next_run", "stored",
        "last_stored", "consecutive_failures", "updated_at", "interval", "last_drill",
        "last_drill_ok", "last_drill_error", "last_drill_url", "retention_refused",
        "last_retention_error", "fatal", "segments_stored", "last_segment", "segment_index",
        "last_segment_error", "shipping"}

def test_start_runs_a_round_at_once_and_stop_is_prompt(
    cluster: MemoryCluster, manager: PluginManager, memory_url: str, tmp_path: Path
) -> None:
    agent = Agent(cluster.nodes[0], memory_url, manager=manager, interval=3600,
                  state_dir=tmp_path / "s")
    agent.start()
    try:
        deadline = time.monotonic() + 10
        while agent.status().next_run is None and time.monotonic() < deadline:
            time.sleep(0.01)
        status = agent.status()
        assert status.stored == 1 and status.next_run == pytest.approx(time.time() + 3600, abs=30)
    finally:
        started = time.monotonic()
        agent.stop()
        assert time.monotonic() - started < 10  # not the hour to the next round
    assert agent.status().next_run is None
    assert len(stored_names(memory_url)) == 1


# --- S3: moto's standalone server in its own process ------------------------------------------------

def test_s3_store_list_retention_and_latest(
    s3: S3Server, cluster: MemoryCluster, manager: PluginManager, tmp_path: Path
) -> None:
    s3.create_bucket("snapshots")
    clock = Clock()
    agent = agent_for(cluster.nodes[0], "s3://snapshots/cluster-a", manager, clock=clock,
                      storage_options=s3.options(), retention=Retention(keep=2, hourly=0, daily=0))
    urls = []
    for i in range(4):
        cluster.nodes[0].set("k", str(i))
        clock.now += 3600
        url = agent.run_once()
        assert url is not None and url.startswith("s3://snapshots/cluster-a/")
        urls.append(url)
    assert [s.url for s in agent.list()] == urls[-2:]
    target = tmp_path / "latest.snap"
    from raft_snapshot_plugin.agent import download

    with target.open("wb") as sink:
        assert download("s3://snapshots/cluster-a/latest", sink, s3.options()) == urls[-1]
    assert rsp.verify(target).index == cluster.nodes[0].applied


def test_s3_failures_use_the_budget(
    s3: S3Server, cluster: MemoryCluster, manager: PluginManager, tmp_path: Path
) -> None:
    clock = Clock()
    down = S3Server.__new__(S3Server)  # an endpoint where nothing listens: the server is down
    from raft_snapshot_plugin.ports import free_ports

    down.endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    cases = {
        "server down": ("s3://snapshots/x", down.options()),
        "no such bucket": ("s3://no-such-bucket/x", s3.options()),
    }
    for what, (url, options) in cases.items():
        agent = agent_for(cluster.nodes[0], url, manager, clock=clock, storage_options=options,
                          max_failures=2, retries=2, state_dir=tmp_path / what)
        for _ in range(2):
            with pytest.raises(StorageError) as caught:
                agent.run_once()
        assert agent.status().healthy is False, what
        assert agent.status().consecutive_failures == 2, what
        assert caught.value.__cause__ is not None, what


def test_s3_access_denied_uses_the_budget(
    cluster: MemoryCluster, manager: PluginManager, tmp_path: Path
) -> None:
    server = S3Server(auth=True)  # moto checks credentials: ours are unknown to its IAM
    try:
        agent = agent_for(cluster.nodes[0], "s3://snapshots/x", manager,
                          storage_options=server.options(), max_failures=1, retries=2,
                          state_dir=tmp_path / "s")
        with pytest.raises(StorageError) as caught:
            agent.run_once()
        assert isinstance(caught.value.__cause__, PermissionError)
        status = agent.status()
        assert status.healthy is False and "PermissionError" in (status.last_error or "")
    finally:
        server.stop()


# --- configuration and the command line -------------------------------------------------------------

def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_load_config_reads_every_key_and_refuses_unknown_ones(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "a.toml", """
[agent]
addr = "http://127.0.0.1:8500"
token = "t"
stale = true
interval = 60
max_failures = 4
state_dir = "state"
segment_buffer_bytes = 100000000
[storage]
url = "s3://b/p"
timeout = 15
[storage.options]
anon = false
[retention]
keep = 1
hourly = 2
daily = 3
"""))
    assert (config.segment_buffer_bytes, config.storage_timeout) == (100_000_000, 15.0)
    assert (config.addr, config.token, config.stale, config.interval, config.max_failures) == (
        "http://127.0.0.1:8500", "t", True, 60.0, 4)
    assert config.state_dir == str(tmp_path / "state")
    assert (config.url, dict(config.storage_options)) == ("s3://b/p", {"anon": False})
    assert config.retention == Retention(1, 2, 3)
    with pytest.raises(ValueError, match="unknown key 'intervall'"):
        load_config(write_config(tmp_path / "b.toml", '[agent]\nintervall = 1\n[storage]\nurl="x"\n'))
    with pytest.raises(ValueError, match="url is required"):
        load_config(write_config(tmp_path / "c.toml", "[agent]\ninterval = 1\n"))
    assert main(["agent", "status", "--config", str(tmp_path / "b.toml")]) == 1


def test_cli_agent_runs_until_sigterm_then_status_list_and_restore_latest(
    cluster: MemoryCluster, manager: PluginManager, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    config = write_config(tmp_path / "agent.toml", f"""
[agent]
token = "{TOKEN}"
interval = 3600
state_dir = "state"
[storage]
url = "{store.as_uri()}"
[retention]
keep = 3
""")
    with serve(cluster.nodes[0], token=TOKEN, manager=manager) as server:
        env = {**os.environ, "RAFT_SNAPSHOT_ADDR": server.url}
        proc = subprocess.Popen([sys.executable, "-m", "raft_snapshot_plugin", "-v", "agent",
                                 "--config", str(config)], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while not (tmp_path / "state" / "status.json").exists() or not list_snapshots(str(store)):
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert b"stopped" in err and b"Traceback" not in err
        assert main(["agent", "status", "--config", str(config)]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["stored"] == 1 and printed["healthy"] is True
        assert main(["agent", "list", "--config", str(config), "--format", "json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [s["name"] for s in listed] == [p.name for p in store.iterdir()]
        # change the cluster's state, then restore the stored snapshot through the CLI
        cluster.nodes[0].set("greeting", "overwritten")
        assert main(["restore", f"{store.as_uri()}/latest", "--addr", server.url,
                     "--token", TOKEN]) == 0
        assert "from file://" in capsys.readouterr().out
        assert cluster.nodes[2].data["greeting"] == "hello"
        assert main(["restore", str(store / "latest"), "--addr", server.url, "--token", TOKEN]) == 0
        assert main(["restore", f"{(tmp_path / 'empty').as_uri()}/latest", "--addr", server.url,
                     "--token", TOKEN]) == 1
        assert "no snapshots stored" in capsys.readouterr().err


# --- encrypted at rest ------------------------------------------------------------------------------

def test_encrypted_objects_are_stored_listed_deduplicated_and_restored(
    cluster: MemoryCluster, manager: PluginManager, tmp_path: Path, age: str
) -> None:
    identity = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True, timeout=30)
    recipient = subprocess.run(["age-keygen", "-y", str(identity)], check=True, text=True,
                               capture_output=True, timeout=30).stdout.strip()
    store = tmp_path / "store"
    agent = agent_for(cluster.nodes[0], str(store), manager, encrypt_to=[recipient],
                      state_dir=tmp_path / "s")
    url = agent.run_once()
    assert url is not None and url.endswith(".snap.age")
    (stored,) = agent.list()
    raw = (store / stored.name).read_bytes()
    assert raw.startswith(b"age-encryption.org/v1\n")
    assert agent.run_once() is None  # the same state: its hash is remembered, not re-read
    # the age tool decrypts what the agent stored into the archive a take gives
    plain = subprocess.run([age, "-d", "-i", str(identity)], input=raw, capture_output=True,
                           check=True, timeout=60).stdout
    (tmp_path / "plain.snap").write_bytes(plain)
    assert rsp.verify(tmp_path / "plain.snap").index == cluster.nodes[0].applied
    # restore from the store: download, decrypt, verify, apply
    target = MemoryCluster(1, name="target").nodes[0]
    with tmp_path.joinpath("dl.age").open("wb") as sink:
        download(f"{store}/latest", sink)
    rsp.restore(target, tmp_path / "dl.age", identity=identity, manager=manager)
    assert target.data == cluster.nodes[0].data


# --- operator slips (issue 22's agent part) ---------------------------------------------------------

def test_agent_status_exit_codes_last_updated_and_config_before_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path / "agent.toml",
                          f'[agent]\ninterval = 60\nstate_dir = "state"\n'
                          f'[storage]\nurl = "{(tmp_path / "store").as_uri()}"\n')
    state = tmp_path / "state"
    state.mkdir()
    now = time.time()
    cases = [(AgentStatus(healthy=True, updated_at=now, interval=60.0), 0, None),
             (AgentStatus(healthy=False, updated_at=now, interval=60.0, last_error="E: x"), 1,
              "unhealthy: E: x"),
             (AgentStatus(healthy=True, updated_at=now - 3600, interval=60.0), 2, "stale")]
    for status, code, said in cases:
        (state / "status.json").write_text(json.dumps(status.to_dict()))
        for argv in (["agent", "status", "--config", str(config)],
                     ["agent", "--config", str(config), "status"]):
            assert main(argv) == code, (status, argv)
            out, err = capsys.readouterr()
            shown = json.loads(out)
            assert shown["last_updated"].endswith("UTC") and shown["stale"] is (code == 2)
            assert (said or "") in err and (not said or err.count("\n") == 1)


def test_bad_numbers_in_the_config_are_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in (("interval", "0"), ("interval", "-5"), ("max_failures", "0"),
                       ("drill_interval", "0"), ("metrics_address", '"9102"'),
                       ("segment_buffer_bytes", "0")):
        config = write_config(tmp_path / "a.toml", f'[agent]\naddr = "http://127.0.0.1:1"\n'
                                                   f"{key} = {value}\n[storage]\nurl = \"x\"\n")
        assert main(["agent", "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert key in err and "Traceback" not in err and err.count("\n") == 1, err
    config = write_config(tmp_path / "a.toml", '[agent]\naddr = "http://127.0.0.1:1"\n'
                                               '[storage]\nurl = "x"\ntimeout = 0\n')
    assert main(["agent", "--config", str(config)]) == 1
    assert "[storage] timeout must be > 0" in capsys.readouterr().err


def test_a_missing_storage_library_is_found_at_startup(
    cluster: MemoryCluster, manager: PluginManager,
) -> None:
    # gcsfs is not installed with the test extra; fsspec imports it when the store is opened
    pytest.importorskip("fsspec")
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here")
    with pytest.raises(StorageError, match=r"gcs.*pip install '\.\[gcs\]'"):
        Agent(cluster.nodes[0], "gs://bucket/prefix", manager=manager)


def test_a_refused_token_is_not_retried_and_stops_the_agent(
    cluster: MemoryCluster, manager: PluginManager, tmp_path: Path,
) -> None:
    with serve(cluster.nodes[0], token=TOKEN, manager=manager) as server:
        agent = Agent(None, str(tmp_path / "store"), addr=server.url, token="wrong", retries=5,
                      backoff=30.0, state_dir=tmp_path / "s", interval=3600)
        started = time.monotonic()
        agent.start()
        assert agent.wait(20), "the agent keeps going with a refused token"
        agent.stop()
    assert time.monotonic() - started < 20  # no 30 s backoff: not retried
    status = agent.status()
    assert not status.healthy and status.fatal and "HTTP 403" in status.fatal
    assert status.consecutive_failures == 1


def test_agent_list_marks_stale_snapshots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    for name in ("20261130T120000Z-7-abc123.snap", "20261130T130000Z-9-def456-stale.snap"):
        (store / name).write_bytes(b"x")
    config = write_config(tmp_path / "agent.toml",
                          f'[agent]\naddr = "http://127.0.0.1:1"\n[storage]\nurl = "{store}"\n')
    assert main(["agent", "list", "--config", str(config)]) == 0
    newest, oldest = capsys.readouterr().out.splitlines()
    assert newest.endswith("stale (read on a follower)") and "index 9" in newest
    assert not oldest.endswith("(read on a follower)")
    assert main(["agent", "list", "--config", str(config), "--format", "json"]) == 0
    assert [s["stale"] for s in json.loads(capsys.readouterr().out)] == [True, False]

