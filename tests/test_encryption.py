"""Encryption at rest: age round trips, key files read as age reads them, damaged and foreign files
refused, and the real ``age`` binary decrypting ours and encrypting for us.

The ``age`` binary (Debian/Ubuntu: ``apt-get install age``) is needed by the interop tests: they
skip without it, and fail instead when ``RAFT_SNAPSHOT_REQUIRE_AGE=1`` (CI sets it), as every test
here does when pyrage (the ``age`` extra) is missing. SSH keys come from ``ssh-keygen`` when it is
installed, else from ``cryptography`` (same OpenSSH file format).
"""

from __future__ import annotations

import errno
import filecmp
import importlib
import importlib.util
import io
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import age_unavailable as _unavailable

from raft_snapshot_plugin.encryption import (
    HEAD_SIZE,
    AgeIdentity,
    AgeRecipient,
    EncryptionError,
    decrypt,
    encrypt,
    is_age,
    load_identities,
    load_recipients_file,
    parse_recipients,
)
from raft_snapshot_plugin.errors import RaftSnapshotError

CHUNK = 64 * 1024  # age's payload chunk
DATA = random.Random(7).randbytes(3 * CHUNK + 123)
#: a real OpenSSH public key of a type age cannot encrypt to (ssh-keygen -t ecdsa)
ECDSA_PUBLIC = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEev9GfmQ2IHTHhq87"
                "VwkA4+rokSuFyOWdZStsNxo7agEBR9Ap6Xv0YG/cFcWDWpw9Ej9ouh5F3/ZaUS2B4WBoE= ops@example")


@pytest.fixture(autouse=True, scope="module")
def pyrage() -> Any:
    if importlib.util.find_spec("pyrage") is None:
        _unavailable("pyrage (pip install 'raft-snapshot-plugin[age]')")
    return importlib.import_module("pyrage")



def _x25519_key_file(pyrage: Any, path: Path) -> str:
    """A key file as age-keygen writes it; returns the public key."""
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    path.write_text(f"# created: 2024-06-07T00:00:00Z\n# public key: {public}\n{identity}\n")
    return public


def _ssh_key_pair(folder: Path, kind: str) -> tuple[Path, str]:
    """An unencrypted OpenSSH private key file and its public key line (with a comment)."""
    private = folder / f"id_{kind}"
    keygen = shutil.which("ssh-keygen")
    if keygen:
        subprocess.run([keygen, "-q", "-t", kind, "-N", "", "-C", "ops@example", "-f", str(private)],
                       check=True, capture_output=True)
        return private, (folder / f"id_{kind}.pub").read_text().strip()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key: Any = (ed25519.Ed25519PrivateKey.generate() if kind == "ed25519"
                else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} ops@example"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, pyrage: Any) -> dict[str, tuple[Path, str]]:
    """``{name: (identity file, public key)}``: two X25519 keys, ssh-ed25519, ssh-rsa."""
    folder = tmp_path_factory.mktemp("keys")
    pairs = {name: (folder / f"{name}.txt", _x25519_key_file(pyrage, folder / f"{name}.txt"))
             for name in ("x1", "x2")}
    pairs["ed25519"] = _ssh_key_pair(folder, "ed25519")
    pairs["rsa"] = _ssh_key_pair(folder, "rsa")
    return pairs


def _encrypt(data: bytes, recipients: list[AgeRecipient]) -> bytes:
    out = io.BytesIO()
    encrypt(io.BytesIO(data), out, recipients)
    return out.getvalue()


def _decrypt(data: bytes, identities: list[AgeIdentity]) -> bytes:
    out = io.BytesIO()
    decrypt(io.BytesIO(data), out, identities)
    return out.getvalue()


# ==================================================================================================
# Round trips
# ==================================================================================================

@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, len(DATA)])
@pytest.mark.parametrize("name", ["x1", "ed25519", "rsa"])
def test_round_trip(keys: dict[str, tuple[Path, str]], name: str, size: int) -> None:
    identity_file, public = keys[name]
    sealed = _encrypt(DATA[:size], parse_recipients([public]))
    assert is_age(sealed) and (size < 32 or DATA[:32] not in sealed)
    assert _decrypt(sealed, load_identities(identity_file)) == DATA[:size]


def test_files_on_disk_round_trip(keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    plain, sealed, back = tmp_path / "a.snap", tmp_path / "a.snap.age", tmp_path / "b.snap"
    plain.write_bytes(DATA)
    with open(plain, "rb") as source, open(sealed, "wb") as target:
        encrypt(source, target, parse_recipients([keys["x1"][1]]))
    with open(sealed, "rb") as source, open(back, "wb") as target:
        decrypt(source, target, load_identities(keys["x1"][0]))
    assert back.read_bytes() == DATA


def test_several_recipients_each_identity_decrypts(keys: dict[str, tuple[Path, str]]) -> None:
    names = ["x1", "x2", "ed25519", "rsa"]
    sealed = _encrypt(DATA, parse_recipients(keys[name][1] for name in names))
    for name in names:
        assert _decrypt(sealed, load_identities(keys[name][0])) == DATA
    # several identities, only one of which matches: the others are tried and passed over
    only_x2 = _encrypt(DATA, parse_recipients([keys["x2"][1]]))
    identities = [*load_identities(keys["ed25519"][0]), *load_identities(keys["x1"][0]),
                  *load_identities(keys["x2"][0])]
    assert _decrypt(only_x2, identities) == DATA


def test_armored_input_decrypts(keys: dict[str, tuple[Path, str]], pyrage: Any) -> None:
    recipient = parse_recipients([keys["x1"][1]])[0]
    armored = pyrage.encrypt(DATA, [recipient._native], armored=True)
    assert armored.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----") and is_age(armored)
    assert _decrypt(armored, load_identities(keys["x1"][0])) == DATA


def test_memory_stays_flat(keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    """64 MiB through both directions in a fresh interpreter: the peak grows by a few MiB at most
    (pyrage's ``*_io`` functions stream; a whole-buffer implementation would add 64 MiB or more)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux) to read the peak RSS")
    plain = tmp_path / "plain.bin"
    with open(plain, "wb") as file:
        for _ in range(64):
            file.write(os.urandom(1 << 20))
    script = textwrap.dedent("""
        import sys
        from raft_snapshot_plugin.encryption import decrypt, encrypt, load_identities, parse_recipients
        def peak_kib():
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
        plain, sealed, back, key, public = sys.argv[1:]
        recipients, identities = parse_recipients([public]), load_identities(key)
        before = peak_kib()
        with open(plain, "rb") as source, open(sealed, "wb") as target:
            encrypt(source, target, recipients)
        with open(sealed, "rb") as source, open(back, "wb") as target:
            decrypt(source, target, identities)
        print(peak_kib() - before)
    """)
    back = tmp_path / "back.bin"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(plain), str(tmp_path / "sealed.age"), str(back),
         str(keys["x1"][0]), keys["x1"][1]],
        capture_output=True, text=True, check=True,
    )
    assert int(proc.stdout) < 16 * 1024, f"peak RSS grew by {int(proc.stdout)} KiB"
    assert filecmp.cmp(back, plain, shallow=False)


# ==================================================================================================
# Key files
# ==================================================================================================

def test_recipients_file_as_age_reads_it(keys: dict[str, tuple[Path, str]], tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "recipients.txt"
    path.write_text(f"# the backup team\n\n{keys['x1'][1]}\r\n  {keys['ed25519'][1]}  \n"
                    f"# retired\n{ECDSA_PUBLIC}\n{keys['rsa'][1]}\n")
    with caplog.at_level(logging.WARNING, logger="raft_snapshot_plugin.encryption"):
        recipients = load_recipients_file(path)
    assert [r.kind for r in recipients] == ["X25519", "ssh-ed25519", "ssh-rsa"]
    assert recipients[0].public_key == keys["x1"][1]
    assert recipients[1].public_key == " ".join(keys["ed25519"][1].split()[:2])  # comment dropped
    assert "recipients.txt:6" in caplog.text and "ecdsa-sha2-nistp256" in caplog.text


@pytest.mark.parametrize(("text", "message"), [
    ("# nobody\n\n", "recipients.txt: no recipients found"),
    ("{x1}\nage1notakey\n", "recipients.txt:2: a malformed age1... X25519 key"),
    ("{x1}\n\nssh-ed25519 AAAA\n", "recipients.txt:3: a malformed ssh-ed25519 public key"),
    ("github:someone\n", "recipients.txt:1: not a public key"),
    ("age1pq1" + "q" * 60 + "\n", "recipients.txt:1: a plugin or post-quantum age key is not supported"),
    ("age1yubikey1" + "q" * 50 + "\n", "recipients.txt:1: a plugin or post-quantum age key"),
])
def test_recipients_file_refused(keys: dict[str, tuple[Path, str]], tmp_path: Path, text: str,
                                 message: str) -> None:
    path = tmp_path / "recipients.txt"
    path.write_text(text.replace("{x1}", keys["x1"][1]))
    with pytest.raises(EncryptionError, match=re.escape(f"{tmp_path}/{message}")):
        load_recipients_file(str(path))


def test_a_secret_in_a_recipients_file_is_not_echoed(keys: dict[str, tuple[Path, str]],
                                                     tmp_path: Path) -> None:
    secret = keys["x1"][0].read_text().splitlines()[-1]
    path = tmp_path / "recipients.txt"
    path.write_text(f"{keys['x2'][1]}\n{secret}\n")
    with pytest.raises(EncryptionError, match=r"recipients\.txt:2: an identity \(secret key\)") as info:
        load_recipients_file(path)
    assert secret not in str(info.value) and secret[16:40] not in str(info.value)


def test_parse_recipients_names_the_position(keys: dict[str, tuple[Path, str]]) -> None:
    assert parse_recipients([]) == []
    with pytest.raises(EncryptionError, match=r"^recipient 2: age cannot encrypt to ecdsa-sha2-nistp256"):
        parse_recipients([keys["x1"][1], ECDSA_PUBLIC])
    with pytest.raises(EncryptionError, match=r"^recipient 1: not a public key"):
        parse_recipients(["hello"])
    # a recipient is public: equal keys compare equal whatever the pyrage object
    assert parse_recipients([keys["x1"][1]]) == parse_recipients([f" {keys['x1'][1]}\n"])


def test_identity_file_as_age_reads_it(keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    lines = [keys[name][0].read_text() for name in ("x1", "x2")]
    path = tmp_path / "keys.txt"
    path.write_bytes(("# two keys, CRLF\n\n" + "\n".join(lines)).replace("\n", "\r\n").encode())
    identities = load_identities(path)
    assert [(i.kind, i.origin) for i in identities] == [("X25519", f"{path}:5"), ("X25519", f"{path}:9")]
    for name in ("x1", "x2"):
        sealed = _encrypt(DATA, parse_recipients([keys[name][1]]))
        assert _decrypt(sealed, identities) == DATA
    ssh = load_identities(keys["ed25519"][0])
    assert [(i.kind, i.origin) for i in ssh] == [("ssh", str(keys["ed25519"][0]))]


def test_identities_never_show_the_secret(keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    secret = keys["x1"][0].read_text().splitlines()[-1]
    identity = load_identities(keys["x1"][0])[0]
    assert secret not in repr(identity) and secret not in str(identity)
    damaged = tmp_path / "keys.txt"
    damaged.write_text(f"# mine\n{secret[:-1]}{'q' if secret[-1] != 'q' else 'p'}\n")
    with pytest.raises(EncryptionError, match=r"keys\.txt:2: a malformed AGE-SECRET-KEY-1") as info:
        load_identities(damaged)
    assert secret[16:40] not in str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    ("", "no identities found"),
    ("# only comments\n\n", "no identities found"),
    ("{x1}\n", "keys.txt:1: a public key where an identity was expected"),
    ("{ed25519}\n", "keys.txt:1: a public key where an identity was expected"),
    ("AGE-PLUGIN-YUBIKEY-1QQQQ\n", "keys.txt:1: plugin and post-quantum identities are not supported"),
    ("# x\npassword123\n", "keys.txt:2: not an identity"),
    ("age-encryption.org/v1\n-> scrypt abc 18\n", "a passphrase-encrypted identity file"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nnot base64\n-----END OPENSSH PRIVATE KEY-----\n",
     "expected an unencrypted OpenSSH ed25519 or RSA private key"),
])
def test_identity_file_refused(keys: dict[str, tuple[Path, str]], tmp_path: Path, text: str,
                               message: str) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(text.replace("{x1}", keys["x1"][1]).replace("{ed25519}", keys["ed25519"][1]))
    with pytest.raises(EncryptionError, match=message.replace(".", r"\.")):
        load_identities(path)


def test_binary_and_passphrase_protected_key_files_refused(tmp_path: Path) -> None:
    binary = tmp_path / "keys.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(EncryptionError, match=r"keys\.bin: an identity file is not UTF-8 text"):
        load_identities(binary)
    with pytest.raises(FileNotFoundError):
        load_identities(tmp_path / "absent.txt")
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        return  # cryptography writes encrypted OpenSSH keys only with bcrypt installed: not checked
    protected = tmp_path / "id_protected"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(protected)],
                   check=True, capture_output=True)
    with pytest.raises(EncryptionError, match="protected by a passphrase"):
        load_identities(protected)


# ==================================================================================================
# Refusals
# ==================================================================================================

def test_wrong_identity_refused(keys: dict[str, tuple[Path, str]]) -> None:
    sealed = _encrypt(DATA, parse_recipients([keys["x1"][1], keys["ed25519"][1]]))
    for name in ("x2", "rsa"):
        with pytest.raises(EncryptionError, match=r"^no identity matches any recipient of this file$"):
            _decrypt(sealed, load_identities(keys[name][0]))


def _damage(sealed: bytes, how: str) -> bytes:
    payload = sealed.index(b"\n---") + 1
    payload = sealed.index(b"\n", payload) + 1  # after the header's MAC line
    edits = {
        "stanza byte": lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:],
        "header MAC": lambda b: b[:payload - 5] + bytes([b[payload - 5] ^ 1]) + b[payload - 4:],
        "nonce": lambda b: b[:payload + 3] + bytes([b[payload + 3] ^ 1]) + b[payload + 4:],
        "first chunk": lambda b: b[:payload + 100] + bytes([b[payload + 100] ^ 1]) + b[payload + 101:],
        "last byte": lambda b: b[:-1] + bytes([b[-1] ^ 1]),
        "cut in header": lambda b: b[:60],
        "cut after header": lambda b: b[:payload],
        "cut mid chunk": lambda b: b[:payload + 16 + CHUNK // 2],
        "cut at chunk end": lambda b: b[:payload + 16 + CHUNK + 16],
        "one byte short": lambda b: b[:-1],
        "one byte more": lambda b: b + b"\0",
    }
    return bytes(edits[how](sealed))


HEADER_DAMAGED = "the age header is damaged"
HEADER_CUT = "the age file is truncated in its header"
PAYLOAD_DAMAGED = "the age payload is damaged or truncated"


@pytest.mark.parametrize(("how", "messages"), [
    # a flipped bit of base64 is either another key share or not base64 at all
    ("stanza byte", {"no identity matches any recipient of this file", HEADER_DAMAGED}),
    ("header MAC", {HEADER_DAMAGED}),
    ("nonce", {PAYLOAD_DAMAGED}),
    ("first chunk", {PAYLOAD_DAMAGED}),
    ("last byte", {PAYLOAD_DAMAGED}),
    ("cut in header", {HEADER_CUT}),
    ("cut after header", {HEADER_CUT}),
    ("cut mid chunk", {PAYLOAD_DAMAGED}),
    ("cut at chunk end", {"the age payload is truncated"}),
    ("one byte short", {PAYLOAD_DAMAGED}),
    ("one byte more", {PAYLOAD_DAMAGED}),
])
def test_damaged_file_refused(keys: dict[str, tuple[Path, str]], how: str, messages: set[str]) -> None:
    sealed = _encrypt(DATA, parse_recipients([keys["x1"][1]]))
    out = io.BytesIO()
    with pytest.raises(EncryptionError) as info:
        decrypt(io.BytesIO(_damage(sealed, how)), out, load_identities(keys["x1"][0]))
    assert str(info.value) in messages
    # what was written before the damage showed is authentic plaintext, and must be thrown away
    assert DATA.startswith(out.getvalue()) and len(out.getvalue()) < len(DATA)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "not an age file: it is empty"),
    (b"age", "not an age file: it does not start with 'age-encryption.org/v1'"),
    (b"\x1f\x8b\x08\x00" + bytes(100), "not an age file: it does not start with"),
    (b"age-encryption.org/v2\n-> X25519 abc\n", "not an age file"),
    (b"-----BEGIN PGP MESSAGE-----\n", "not an age file"),
])
def test_non_age_input_refused(keys: dict[str, tuple[Path, str]], data: bytes, message: str) -> None:
    with pytest.raises(EncryptionError, match="^" + message):
        _decrypt(data, load_identities(keys["x1"][0]))


def test_is_age() -> None:
    assert is_age(b"age-encryption.org/v1\n-> X25519 ")
    assert is_age(b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl")
    assert not is_age(b"age-encryption.org/v1")  # the header line is not finished
    assert not is_age(b"") and not is_age(b"\x1f\x8b") and not is_age(b" age-encryption.org/v1\n")
    assert len(b"-----BEGIN AGE ENCRYPTED FILE-----") == HEAD_SIZE


def test_no_keys_refused(keys: dict[str, tuple[Path, str]]) -> None:
    with pytest.raises(EncryptionError, match="no recipients"):
        _encrypt(DATA, [])
    with pytest.raises(EncryptionError, match="no identities"):
        _decrypt(_encrypt(DATA, parse_recipients([keys["x1"][1]])), [])
    assert issubclass(EncryptionError, RaftSnapshotError)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("size", [10, len(DATA)])
def test_a_write_error_is_the_files_own(keys: dict[str, tuple[Path, str]], size: int) -> None:
    """ENOSPC reaches the caller as the OSError it is, even where pyrage would drop it (a small
    file's single write happens as pyrage's buffered writer is flushed on the way out)."""
    sealed = _encrypt(DATA[:size], parse_recipients([keys["x1"][1]]))
    with open("/dev/full", "wb", buffering=0) as full:
        with pytest.raises(OSError, match="No space left") as info:
            encrypt(io.BytesIO(DATA[:size]), full, parse_recipients([keys["x1"][1]]))
        assert info.value.errno == errno.ENOSPC and not isinstance(info.value, EncryptionError)
        with pytest.raises(OSError, match="No space left"):
            decrypt(io.BytesIO(sealed), full, load_identities(keys["x1"][0]))


def test_a_read_error_is_the_files_own(keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    with open(tmp_path / "write-only", "wb") as source, pytest.raises(io.UnsupportedOperation):
        encrypt(source, io.BytesIO(), parse_recipients([keys["x1"][1]]))


def test_without_pyrage_one_clear_line(monkeypatch: pytest.MonkeyPatch,
                                       keys: dict[str, tuple[Path, str]]) -> None:
    monkeypatch.setitem(sys.modules, "pyrage", None)  # what the import system does for "not installed"
    hint = "age encryption needs the 'age' extra: pip install 'raft-snapshot-plugin[age]'"
    with pytest.raises(EncryptionError) as info:
        parse_recipients([keys["x1"][1]])
    assert str(info.value) == hint
    with pytest.raises(EncryptionError, match=r"the 'age' extra"):
        load_identities(keys["x1"][0])
    with pytest.raises(EncryptionError, match=r"the 'age' extra"):
        decrypt(io.BytesIO(b"age-encryption.org/v1\n"), io.BytesIO(), [])


# ==================================================================================================
# Interop with the real age binary
# ==================================================================================================

def _age_keygen(path: Path) -> str:
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return next(line.split(": ")[1] for line in path.read_text().splitlines()
                if line.startswith("# public key: "))


@pytest.mark.parametrize("name", ["age-keygen", "ed25519", "rsa"])
def test_age_decrypts_ours(age: str, keys: dict[str, tuple[Path, str]], tmp_path: Path,
                           name: str) -> None:
    if name == "age-keygen":
        identity_file = tmp_path / "key.txt"
        public = _age_keygen(identity_file)
    else:
        identity_file, public = keys[name]
    sealed, plain = tmp_path / "a.snap.age", tmp_path / "a.snap"
    with open(sealed, "wb") as target:
        encrypt(io.BytesIO(DATA), target, parse_recipients([keys["x2"][1], public]))
    subprocess.run([age, "-d", "-i", str(identity_file), "-o", str(plain), str(sealed)],
                   check=True, capture_output=True)
    assert plain.read_bytes() == DATA


@pytest.mark.parametrize("how", ["-r", "-R", "-R ssh", "-a -r"])
def test_we_decrypt_ages(age: str, keys: dict[str, tuple[Path, str]], tmp_path: Path, how: str) -> None:
    identity_file = tmp_path / "key.txt"
    public = _age_keygen(identity_file)
    plain, sealed = tmp_path / "a.snap", tmp_path / "a.snap.age"
    plain.write_bytes(DATA)
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# ops\n{public}\n\n{keys['ed25519'][1]}\n")
    args = {"-r": ["-r", public], "-a -r": ["-a", "-r", public],
            "-R": ["-R", str(recipients)], "-R ssh": ["-R", str(recipients)]}[how]
    subprocess.run([age, *args, "-o", str(sealed), str(plain)], check=True, capture_output=True)
    assert is_age(sealed.read_bytes()[:HEAD_SIZE])
    identities = load_identities(keys["ed25519"][0] if how == "-R ssh" else identity_file)
    with open(sealed, "rb") as source:
        assert _decrypt(source.read(), identities) == DATA
    # the same recipients file, read by us, encrypts to what age decrypts
    ours = tmp_path / "ours.age"
    with open(ours, "wb") as target:
        encrypt(io.BytesIO(DATA), target, load_recipients_file(recipients))
    back = subprocess.run([age, "-d", "-i", str(identity_file), str(ours)], check=True,
                          capture_output=True).stdout
    assert back == DATA


def test_age_refuses_what_we_refuse(age: str, keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    """A truncated file: age and we agree it is not to be trusted."""
    sealed = tmp_path / "a.snap.age"
    sealed.write_bytes(_damage(_encrypt(DATA, parse_recipients([keys["x1"][1]])), "cut at chunk end"))
    proc = subprocess.run([age, "-d", "-i", str(keys["x1"][0]), str(sealed)], capture_output=True,
                          check=False)
    assert proc.returncode != 0
    with open(sealed, "rb") as source, pytest.raises(EncryptionError) as info:
        decrypt(source, io.BytesIO(), load_identities(keys["x1"][0]))
    assert str(info.value) == "the age payload is truncated"
