"""Header-tree resolution picks the nearest installed Debian tree."""

from __future__ import annotations

from pathlib import Path

from profiler import kernel


def _tree(root: Path, name: str, common: bool = True) -> None:
    (root / name / "include").mkdir(parents=True)
    if common:
        base = name.rsplit("-", 1)[0]
        (root / f"{base}-common" / "include").mkdir(parents=True)


def test_nearest_header_tree_prefers_same_major(tmp_path: Path) -> None:
    _tree(tmp_path, "linux-headers-5.10.0-30-amd64")
    _tree(tmp_path, "linux-headers-6.1.0-57-amd64")
    arch, common = kernel.nearest_header_tree("6.18.44-fc-v1045", tmp_path) or (None, None)
    assert arch is not None and arch.name == "linux-headers-6.1.0-57-amd64"
    assert common is not None and common.name == "linux-headers-6.1.0-57-common"


def test_nearest_header_tree_none_installed(tmp_path: Path) -> None:
    assert kernel.nearest_header_tree("6.18.0", tmp_path) is None


def test_common_trees_are_not_candidates(tmp_path: Path) -> None:
    _tree(tmp_path, "linux-headers-6.1.0-57-amd64", common=True)
    trees = kernel.installed_header_trees(tmp_path)
    assert [t[0].name for t in trees] == ["linux-headers-6.1.0-57-amd64"]


def test_missing_common_sibling_is_tolerated(tmp_path: Path) -> None:
    _tree(tmp_path, "linux-headers-6.1.0-9-amd64", common=False)
    found = kernel.nearest_header_tree("6.1.0", tmp_path)
    assert found is not None and found[1] is None
