"""The raft-snapshot command: in process (main) and as the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import rawarchive
from conftest import vector_names

from raft_snapshot_plugin.cli import main


def console_script() -> str:
    found = shutil.which("raft-snapshot", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.fail("the raft-snapshot console script is not installed next to this Python",
                    pytrace=False)
    return found


def run_script(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([console_script(), *args], input=None if stdin is None else stdin.decode(
        "latin-1"), capture_output=True, text=True, encoding="utf-8", errors="replace",
        check=False, timeout=60)


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def sidecar(vectors_dir: Path, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((vectors_dir / f"{name}.expected.json").read_text())
    return result


def verified_meta(out: str | bytes) -> dict[str, Any]:
    """verify --format json: meta.json's fields in Consul's order, then how it is sealed."""
    found: dict[str, Any] = json.loads(out)
    assert list(found)[-1] == "Sealed" and found.pop("Sealed") == "not sealed"
    return found


@pytest.mark.parametrize("name", vector_names("valid"))
def test_verify_valid_in_process(
    capsys: pytest.CaptureFixture[str], vectors_dir: Path, name: str
) -> None:
    path = str(vectors_dir / f"{name}.snap")
    meta = sidecar(vectors_dir, name)["meta"]
    code, out, err = run_main(capsys, "verify", path, "--format", "json")
    assert (code, err) == (0, "")
    assert verified_meta(out) == meta
    assert list(verified_meta(out)) == list(meta)  # Consul's field names, in Consul's order
    code, out, err = run_main(capsys, "verify", path)
    assert (code, err) == (0, "")
    assert meta["ID"] in out
    assert f"Index  {meta['Index']}" in out or f"Index {meta['Index']}" in " ".join(out.split())
    assert f"State size  {meta['Size']} bytes (uncompressed)" in out
    assert "Sealed      not sealed" in out


def test_verify_valid_console_script(vectors_dir: Path) -> None:
    path = str(vectors_dir / "valid_three_servers.snap")
    meta = sidecar(vectors_dir, "valid_three_servers")["meta"]
    done = run_script("verify", path, "--format", "json")
    assert (done.returncode, done.stderr) == (0, "")
    assert verified_meta(done.stdout) == meta
    done = run_script("verify", path)
    assert (done.returncode, done.stderr) == (0, "")
    assert "node1" in done.stdout and meta["ID"] in done.stdout


def test_verify_from_stdin(vectors_dir: Path) -> None:
    data = (vectors_dir / "valid_small.snap").read_bytes()
    done = subprocess.run([console_script(), "verify", "-", "--format", "json"], input=data,
                          capture_output=True, check=False, timeout=60)
    assert (done.returncode, done.stderr) == (0, b"")
    assert verified_meta(done.stdout) == sidecar(vectors_dir, "valid_small")["meta"]


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"want one stderr line, got: {err!r}"
    assert "Traceback" not in err
    return lines[0]


BAD_MEMBERS = {
    "bad_state_byte_flipped": "state.bin",
    "bad_extra_member_evil_txt": "evil.txt",
    "bad_member_dotdot_meta_json": "../meta.json",
    "bad_plain_tar_not_gzipped": "gzip",
    "bad_trailing_garbage_in_gzip": "tar",
    "bad_tar_padded_to_record": "tar",
}


@pytest.mark.parametrize("name", vector_names("bad"))
def test_verify_invalid_in_process(
    capsys: pytest.CaptureFixture[str], vectors_dir: Path, name: str
) -> None:
    code, out, err = run_main(capsys, "verify", str(vectors_dir / f"{name}.snap"))
    assert code == 1
    assert out == ""
    line = one_error_line(err)
    assert line.startswith("raft-snapshot: error: ")
    if name in BAD_MEMBERS:
        assert f"error: {vectors_dir / name}.snap: {BAD_MEMBERS[name]}: " in line


@pytest.mark.parametrize("name", ["bad_state_byte_flipped", "bad_plain_tar_not_gzipped"])
def test_verify_invalid_console_script(vectors_dir: Path, name: str) -> None:
    done = run_script("verify", str(vectors_dir / f"{name}.snap"), "--format", "json")
    assert done.returncode == 1
    assert done.stdout == ""
    line = one_error_line(done.stderr)
    assert f"error: {vectors_dir / name}.snap: {BAD_MEMBERS[name]}: " in line


@pytest.mark.parametrize("case", ["sums_missing_line", "pax_path_evil", "empty_file"])
def test_verify_hand_built_invalid(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    built = rawarchive.CASES_BY_NAME[case]
    path = tmp_path / "bad.snap"
    path.write_bytes(built.build())
    code, _, err = run_main(capsys, "verify", str(path))
    assert code == 1
    assert f"error: {path}: {built.member}: " in one_error_line(err)


def test_missing_file_and_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.snap")
    code, out, err = run_main(capsys, "verify", missing)
    assert (code, out) == (1, "")
    assert missing in one_error_line(err)
    code, out, err = run_main(capsys, "verify", str(tmp_path))
    assert (code, out) == (1, "")
    assert str(tmp_path) in one_error_line(err)
    for target in (missing, str(tmp_path)):
        done = run_script("verify", target)
        assert done.returncode == 1
        assert done.stdout == ""
        assert target in one_error_line(done.stderr)


def test_usage_errors_exit_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "verify")
    assert code == 2 and "Traceback" not in err
    code, _, _ = run_main(capsys, "verify", "x", "--format", "xml")
    assert code == 2
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and "raft-snapshot" in out


def test_a_stale_snapshot_says_so_in_verify_and_inspect(
    capsys: pytest.CaptureFixture[str], private_tmpdir: Path, tmp_path: Path
) -> None:
    """``"Stale":true`` in meta.json (read on a follower), in all four outputs; Consul's own
    reading of the archive is unchanged (it ignores the key)."""
    from consul_reader import consul_read

    from raft_snapshot_plugin import Snapshot, SnapshotMeta

    for stale in (True, False):
        path = tmp_path / f"stale-{stale}.snap"
        with Snapshot.create(SnapshotMeta(index=9, term=2), b"state", stale=stale) as snap:
            snap.save(path)
        meta, state = consul_read(path.read_bytes())
        assert (meta.get("Stale"), state) == (True if stale else None, b"state")
        code, out, _ = run_main(capsys, "verify", str(path), "--format", "json")
        assert code == 0 and json.loads(out).get("Stale") == (True if stale else None)
        code, out, _ = run_main(capsys, "verify", str(path))
        assert code == 0 and ("Stale" in out) == stale
        code, out, _ = run_main(capsys, "inspect", str(path), "--format", "json")
        assert code == 0 and json.loads(out)["Meta"].get("Stale") == (True if stale else None)
        code, out, _ = run_main(capsys, "inspect", str(path))
        assert code == 0 and ("Stale" in out) == stale
