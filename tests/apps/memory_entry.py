"""The reference backend as an installed adapter would be: an entry point's object.

``tests/data/memory-entry-point`` holds a ``.dist-info`` whose entry point names ``plugin`` below;
with that folder and ``tests`` on ``PYTHONPATH``, a ``raft-snapshot`` process finds the memory
backend as it finds any adapter (the CLI's point-in-time restore replays changes through it).
"""

from __future__ import annotations

from raft_snapshot_plugin.memory import MemoryPlugin

plugin = MemoryPlugin()
