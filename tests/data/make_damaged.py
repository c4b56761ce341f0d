"""Regenerate the hand-built (mostly damaged) archives in this folder.

Run ``python tests/data/make_damaged.py`` (or with ``--out DIR`` to write elsewhere). Each case of
``tests/rawarchive.py`` becomes ``<name>.snap``; ``damaged.json`` records what a reader must say about
each: ``{"error": null | "ArchiveError" | "IntegrityError", "member": ...}``. The output is
deterministic: ``tests/test_archive.py`` checks that a fresh run reproduces the committed files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import rawarchive  # noqa: E402  (found through the path set just above)

MANIFEST = "damaged.json"


def generate(out: Path) -> list[Path]:
    """Write every case and the manifest into ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    manifest: dict[str, dict[str, str | None]] = {}
    for case in (c for c in rawarchive.CASES if c.committed):
        path = out / f"{case.name}.snap"
        path.write_bytes(case.build())
        written.append(path)
        manifest[case.name] = {"error": case.error, "member": case.member}
    manifest_path = out / MANIFEST
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written.append(manifest_path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write (default: here)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
