"""Publishing a new version of a folder: write it completely, then switch a link in one rename."""

from __future__ import annotations

import os
from pathlib import Path


def switch_link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` (a sibling path) atomically: readers see the old or the new target."""
    staged = link.with_name(f".{link.name}-{target.name}")
    staged.unlink(missing_ok=True)
    staged.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
    os.replace(staged, link)
