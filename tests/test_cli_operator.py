"""Issue 22's slips of the command line, each as the operator meets it: the exact command, the one
line it answers, the exit status. Against the real app process of ``test_cli_remote`` (a 3-node
MemoryCluster serving the endpoint), real files and real sockets."""

from __future__ import annotations

import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_cli_remote
from test_cli_remote import CLI, TOKEN, App, cli, one_error_line, remote

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import Snapshot, SnapshotMeta

#: test_cli_remote's fixtures: the app process (a 3-node MemoryCluster serving the endpoint)
start_app = test_cli_remote.start_app
app = test_cli_remote.app


def usage_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("raft-snapshot: error: "), done.stderr
    assert "Error:" not in done.stderr
    return lines[0]


def agent_config(path: Path, addr: str, token: str) -> Path:
    path.write_text(f'[agent]\naddr = "{addr}"\ntoken = "{token}"\n\n'
                    f'[storage]\nurl = "file://{path.parent}/store"\n')
    return path


# ==================================================================================================
# --config, --token-file
# ==================================================================================================

def test_config_gives_addr_and_token_to_save_restore_and_status(app: App, tmp_path: Path) -> None:
    config = agent_config(tmp_path / "agent.toml", app.leader, TOKEN)
    target = tmp_path / "c.snap"
    done = cli("save", str(target), "--config", str(config))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    before = app.data()
    app.set("later", "write")
    done = cli("restore", str(target), "--config", str(config))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert app.data() == before
    # the command line wins over the file, the file over the environment
    line = one_error_line(cli("save", str(target), "--config", str(config), "--token", "wrong"))
    assert "403" in line
    done = cli("save", str(target), "--config", str(config),
               env={"RAFT_SNAPSHOT_TOKEN": "wrong", "RAFT_SNAPSHOT_ADDR": "http://127.0.0.1:1"})
    assert done.returncode == 0, done.stderr


def test_token_file(app: App, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    target = tmp_path / "t.snap"
    done = cli("save", str(target), "--addr", app.leader, "--token-file", str(token_file))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    done = cli("save", str(target), "--addr", app.leader,
               env={"RAFT_SNAPSHOT_TOKEN_FILE": str(token_file)})
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    line = one_error_line(cli("save", str(target), "--addr", app.leader, "--token-file",
                              str(tmp_path / "missing")))
    assert line == (f"raft-snapshot: error: cannot read the token file {tmp_path / 'missing'}: "
                    "No such file or directory")
    (tmp_path / "empty").write_text("\n")
    line = one_error_line(cli("save", str(target), "--addr", app.leader, "--token-file",
                              str(tmp_path / "empty")))
    assert line.endswith(f"the token file {tmp_path / 'empty'} is empty")
    assert "give --token or --token-file, not both" in usage_line(cli(
        "save", str(target), "--addr", app.leader, "--token", TOKEN, "--token-file",
        str(token_file)))


def test_no_addr_is_one_usage_line(tmp_path: Path) -> None:
    line = usage_line(cli("save", str(tmp_path / "x.snap")))
    assert line == ("raft-snapshot: error: give --addr URL (or RAFT_SNAPSHOT_ADDR, or --config "
                    "with [agent] addr) (see 'raft-snapshot save --help')")
    assert usage_line(cli("save")) == ("raft-snapshot: error: Missing argument 'FILE'. "
                                       "(see 'raft-snapshot save --help')")
    assert "No such command 'nope'" in usage_line(cli("nope"))


# ==================================================================================================
# save's destination, .unverified, - for stdin and stdout
# ==================================================================================================

def test_destination_checked_before_any_snapshot(tmp_path: Path) -> None:
    """Nothing listens at --addr: had the command asked the node, the line would say so."""
    addr = ["--addr", "http://127.0.0.1:1", "--token", TOKEN]
    line = one_error_line(cli("save", str(tmp_path / "nodir" / "x.snap"), *addr))
    assert line == (f"raft-snapshot: error: {tmp_path / 'nodir' / 'x.snap'}: cannot write there: "
                    f"no such folder {tmp_path / 'nodir'}")
    line = usage_line(cli("save", str(tmp_path), *addr))
    assert f"File '{tmp_path}' is a directory." in line
    assert "an empty file name" in usage_line(cli("save", "", *addr))


def test_a_killed_saves_unverified_file_is_swept(app: App, tmp_path: Path) -> None:
    """A save killed mid-download (here: a process in the same step of Client.save, killed
    there, so the test never races the download's end) leaves its file; the next save sweeps it."""
    target = tmp_path / "k.snap"
    killed = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from raft_snapshot_plugin._files import unverified_output\n"
         "with unverified_output(sys.argv[1]) as (out, path):\n"
         "    out.write(b'x' * 1000); out.flush(); print(path, flush=True); time.sleep(60)",
         str(target)], stdout=subprocess.PIPE, text=True)
    assert killed.stdout is not None
    left = Path(killed.stdout.readline().strip())
    killed.kill()
    killed.communicate(timeout=30)
    assert left.exists() and left.name.startswith(f"k.snap.{killed.pid}.")
    done = cli("save", str(target), *remote(app.leader))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.glob("k.snap*")) == ["k.snap"]


def test_unverified_name_carries_the_pid(app: App, tmp_path: Path) -> None:
    """While a save runs its partial file is FILE.<pid>.<random>.unverified."""
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(p.name for p in tmp_path.glob("w.snap.*"))
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    proc = subprocess.Popen([*CLI, "save", str(tmp_path / "w.snap"), *remote(app.leader)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.communicate(timeout=30)
    stop.set()
    watcher.join()
    assert proc.returncode == 0
    assert len(seen) <= 1 and all(
        re.fullmatch(rf"w\.snap\.{proc.pid}\.[^.]+\.unverified", name) for name in seen), seen


def test_dash_is_stdout_for_save_and_stdin_for_restore(app: App, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    done = subprocess.run([*CLI, "save", "-", *remote(app.leader)], capture_output=True,
                          timeout=30, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().startswith("Saved and verified snapshot to index ")
    assert done.stderr.decode().endswith(": stdout\n")
    (tmp_path / "out.snap").write_bytes(done.stdout)
    meta = rsp.verify(tmp_path / "out.snap")
    assert not (tmp_path / "-").exists() and list(Path.cwd().glob("-")) == []

    before = app.data()
    app.set("later", "write")
    restored = subprocess.run([*CLI, "restore", "-", *remote(app.leader)], input=done.stdout,
                              capture_output=True, timeout=30, env=env, check=False)
    assert restored.returncode == 0, restored.stderr
    first, *members = restored.stdout.decode().splitlines()
    assert re.fullmatch(rf"Restored snapshot {meta.id} \(index {meta.index}, term {meta.term}\) "
                        r"from stdin, committed at index (\d+)", first), first
    at = first.rsplit(" ", 1)[1]
    assert members == [f"  node memory://app/{i} applied index {at}" for i in range(3)]
    assert app.data() == before
    app.wait_tmpdir_empty()


def test_a_full_disk_names_the_file(app: App, tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    with open("/dev/full", "wb") as full:
        done = subprocess.run([*CLI, "save", "-", *remote(app.leader)], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=30, env=env, check=False)
    assert done.returncode == 1
    assert done.stderr == "raft-snapshot: error: No space left on device: stdout\n"


# ==================================================================================================
# Messages
# ==================================================================================================

def test_archive_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.snap"
    bad.write_bytes(b"not an archive at all")
    for verb in ("verify", "inspect"):
        line = one_error_line(cli(verb, str(bad)))
        assert line == f"raft-snapshot: error: {bad}: gzip: not a gzip stream (invalid header)"
    done = subprocess.run([*CLI, "verify", "-"], input=b"junk", capture_output=True, timeout=30,
                          check=False)
    assert done.returncode == 1
    assert done.stderr.decode() == ("raft-snapshot: error: stdin: gzip: not a gzip stream "
                                    "(invalid header)\n")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says anything, as a Raft port does to HTTP."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        held: list[socket.socket] = []
        server.settimeout(0.2)
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    held.append(server.accept()[0])
                except OSError:
                    continue

        thread = threading.Thread(target=accept)
        thread.start()
        yield server.getsockname()[1]
        stop.set()
        thread.join()
        for sock in held:
            sock.close()


def test_a_raft_port_fails_fast(silent_port: int, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{silent_port}"
    good = tmp_path / "g.snap"
    with Snapshot.create(SnapshotMeta(index=3, term=1), b"state") as snap:
        snap.save(good)
    for verb in (["save", str(tmp_path / "x.snap")], ["restore", str(good)]):
        started = time.monotonic()
        line = one_error_line(cli(*verb, "--addr", url, "--token", TOKEN, "--connect-timeout",
                                  "1"))
        assert time.monotonic() - started < 15
        assert line == (f"raft-snapshot: error: {url}: connected, but nothing answered within "
                        "1 s: is --addr the snapshot endpoint (not a Raft port)?")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.snap"]


def test_another_http_service_is_named_as_such(tmp_path: Path) -> None:
    import http.server

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        line = one_error_line(cli("save", str(tmp_path / "x.snap"), "--addr", url))
        assert line.startswith(f"raft-snapshot: error: {url}: answered 501 ")
        assert line.endswith("but not as a raft-snapshot endpoint does: is --addr the snapshot "
                             "endpoint (not a Raft port or another service)?")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_tls_mistakes_in_plain_words(start_app: object, tmp_path: Path) -> None:
    from apps.tlscert import make_cert

    cert, key = make_cert(tmp_path)
    tls = start_app("--certfile", str(cert), "--keyfile", str(key))  # type: ignore[operator]
    plain_url = tls.leader.replace("https:", "http:")
    line = one_error_line(cli("save", str(tmp_path / "x.snap"), *remote(plain_url)))
    assert line == f"raft-snapshot: error: {plain_url}: the server speaks TLS: use https://"
    line = one_error_line(cli("save", str(tmp_path / "x.snap"), *remote(tls.leader)))
    assert "the server's certificate is not trusted: give --ca-file" in line
    assert "CERTIFICATE_VERIFY_FAILED" in line

    plain = start_app()  # type: ignore[operator]
    tls_url = plain.leader.replace("http:", "https:")
    line = one_error_line(cli("save", str(tmp_path / "x.snap"), *remote(tls_url)))
    assert line.startswith(f"raft-snapshot: error: {tls_url}: cannot reach the endpoint: the "
                           "server does not speak TLS: use http:// (")
    assert not list(tmp_path.glob("x.snap*"))


def test_inspect_says_a_disabled_adapter_is_disabled(tmp_path: Path) -> None:
    if not any(ep.name == "pysyncobj" for ep in importlib.metadata.entry_points(
            group="raft_snapshot")):
        pytest.skip("needs an installed adapter to disable (the PySyncObj adapter is not here)")
    path = tmp_path / "p.snap"
    with Snapshot.create(SnapshotMeta(index=3, term=1, backend="pysyncobj"), b"state") as snap:
        snap.save(path)
    done = cli("inspect", str(path), env={"RAFT_SNAPSHOT_DISABLE_PLUGINS": "pysyncobj"})
    assert done.returncode == 0, done.stderr
    assert ("No breakdown of the state (the pysyncobj adapter is disabled "
            "(RAFT_SNAPSHOT_DISABLE_PLUGINS)).") in done.stdout
    other = tmp_path / "o.snap"
    with Snapshot.create(SnapshotMeta(index=3, term=1, backend="nosuch"), b"state") as snap:
        snap.save(other)
    done = cli("inspect", str(other))
    assert "(the nosuch adapter is not installed)" in done.stdout


def test_verify_says_what_size_is(tmp_path: Path) -> None:
    path = tmp_path / "s.snap"
    with Snapshot.create(SnapshotMeta(index=3, term=1), b"12345") as snap:
        snap.save(path)
    done = cli("verify", str(path))
    assert "State size  5 bytes (uncompressed)" in done.stdout.splitlines()


def test_top_level_help_shows_whole_descriptions() -> None:
    done = cli("--help")
    assert done.returncode == 0
    commands = done.stdout.split("Commands:", 1)[1]
    assert "..." not in commands
    text = " ".join(done.stdout.split())
    assert "Run the snapshot agent until SIGINT or SIGTERM (with --config), or query it." in text



def test_append_filename(app: App, tmp_path: Path) -> None:
    done = cli("save", str(tmp_path / "backup.snap"), "--append-filename",
               "index,backend,status,time", *remote(app.leader))
    assert done.returncode == 0, done.stderr
    [saved] = tmp_path.glob("backup-*.snap")
    meta = rsp.verify(saved)
    assert re.fullmatch(rf"backup-{meta.index}-memory-leader-\d{{8}}T\d{{6}}Z\.snap", saved.name)
    assert done.stdout == f"Saved and verified snapshot to index {meta.index}: {saved}\n"
    done = cli("save", str(tmp_path / "f.snap"), "--stale", "--append-filename", "term,status",
               *remote(app.followers[0]))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / f"f-{meta.term}-stale.snap").exists()
    assert "unknown field(s) dc; known: index,term,backend,time,status" in usage_line(cli(
        "save", str(tmp_path / "x.snap"), "--append-filename", "index,dc", *remote(app.leader)))
    assert "--append-filename needs a FILE name, not -" in usage_line(cli(
        "save", "-", "--append-filename", "index", *remote(app.leader)))
    assert sorted(p.name for p in tmp_path.glob("*.snap*")) == sorted(
        [saved.name, f"f-{meta.term}-stale.snap"])


def test_appended_name_keeps_the_suffixes() -> None:
    from raft_snapshot_plugin.cli._destination import appended_name

    meta = SnapshotMeta(index=7, term=2, backend="etcd")
    assert appended_name("/b/backup.snap.age", ("index", "backend"), meta) == \
        "/b/backup-7-etcd.snap.age"
    assert appended_name("backup", ("index", "status"), meta) == "backup-7-leader"
    assert appended_name("x.tar", ("term",), meta) == "x-2.tar"


# ==================================================================================================
# inspect --detail
# ==================================================================================================

def test_inspect_detail_by_key(tmp_path: Path) -> None:
    from raft_snapshot_plugin.cli._common import keys_table
    from raft_snapshot_plugin.manager import get_plugin_manager
    from raft_snapshot_plugin.memory import encode_memory_state
    from raft_snapshot_plugin.testing import MEMORY_BACKEND, MemoryPlugin

    data = {"a/b/c": "1", "a/b/d": "22", "a/x": "333", "z": "4444"}
    path = tmp_path / "m.snap"
    with Snapshot.create(SnapshotMeta(index=5, term=1, backend=MEMORY_BACKEND),
                         encode_memory_state(data)) as snap:
        snap.save(path)
    manager = get_plugin_manager(load_entrypoints=False)
    manager.register(MemoryPlugin(), name=MEMORY_BACKEND)
    assert "raft_snapshot_describe_keys" in manager.hooks_of(MEMORY_BACKEND)
    found = rsp.inspect(path, manager=manager, detail=(2, ""))
    assert found.stats and found.keys is not None
    assert [(s.name, s.count, s.sum) for s in found.keys] == [
        ("a/b", 2, 5 + 1 + 5 + 2), ("a/x", 1, 3 + 3), ("z", 1, 1 + 4)]
    assert found.to_dict()["KStats"][0] == {"Name": "a/b", "Count": 2, "Sum": 13}
    narrowed = rsp.inspect(path, manager=manager, detail=(1, "a/"))
    assert [(s.name, s.count) for s in narrowed.keys or ()] == [("a", 3)]
    lines = keys_table(narrowed, 1, "a/").splitlines()
    assert lines[1] == " By key (depth 1, keys under 'a/'):"
    assert [line.split() for line in lines[3:]] == [
        ["Key", "Name", "Count", "Size"], ["--------", "-----", "----"], ["a", "3", "19"],
        ["----", "-----", "----"], ["Total", "3", "19"]]
    assert "KStats" not in rsp.inspect(path, manager=manager).to_dict()


def test_inspect_detail_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "o.snap"
    with Snapshot.create(SnapshotMeta(index=3, term=1, backend="nosuch"), b"state") as snap:
        snap.save(path)
    done = cli("inspect", str(path), "--detail", "--depth", "1", "--filter", "a/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(" No breakdown by key (the nosuch adapter gives none "
                                         "here).")
    assert "Invalid value for '--depth'" in usage_line(cli("inspect", str(path), "--detail",
                                                           "--depth", "0"))


# ==================================================================================================
# demo --keep-running (--serve)
# ==================================================================================================

@pytest.mark.parametrize("flag", ["--keep-running", "--serve"])
def test_demo_keep_running_until_ctrl_c(tmp_path: Path, flag: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    env["RAFT_SNAPSHOT_TMPDIR"] = str(tmp_path)
    head = b""
    proc = subprocess.Popen([*CLI, "demo", flag, "--backend", "memory"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        head = test_cli_remote._read_line(proc, 30.0)
        first = head.decode().splitlines()[0]
        assert first.startswith("export RAFT_SNAPSHOT_ADDR=http://127.0.0.1:")
        exported = dict(part.split("=", 1) for part in first.split()[1:])
        target = tmp_path / "demo.snap"
        done = cli("save", str(target), env=exported)
        assert done.returncode == 0, done.stderr
        assert rsp.verify(target).backend == "memory"
        done = cli("restore", str(target), env=exported)
        assert done.returncode == 0, done.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err.decode().endswith("raft-snapshot demo: stopped\n") and b"Traceback" not in err
    assert b"raft-snapshot save backup.snap" in head + out
    assert b"# a 3-node in-memory cluster: leader http://127.0.0.1:" in head + out
    assert usage_line(cli("demo", flag, "--backend", "nope")) == (
        "raft-snapshot: error: Invalid value for '--backend': no demo cluster for 'nope' "
        f"(offered: {', '.join(_demo_clusters())}) (see 'raft-snapshot demo --help')")


def _demo_clusters() -> list[str]:
    found = {ep.name for ep in importlib.metadata.entry_points(group="raft_snapshot.demo_cluster")}
    return sorted({"memory", *found})
