"""Header-tree resolution picks the nearest installed Debian tree."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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


def _debian_pair(src: Path, ver: str) -> tuple[Path, Path]:
    """A Debian split tree: generated headers in -amd64, the rest in -common."""
    arch, common = src / f"linux-headers-{ver}-amd64", src / f"linux-headers-{ver}-common"
    (arch / "include" / "generated").mkdir(parents=True)
    (arch / "include" / "generated" / "autoconf.h").write_text("#define CONFIG_X 1\n")
    (arch / "arch" / "x86" / "include" / "generated").mkdir(parents=True)
    (common / "include" / "linux").mkdir(parents=True)
    (common / "include" / "linux" / "kconfig.h").write_text("#include <generated/autoconf.h>\n")
    (common / "arch" / "x86" / "include" / "asm").mkdir(parents=True)
    return arch, common


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty /lib/modules, a /usr/src with one Debian tree, a scratch dir; no env."""
    monkeypatch.setattr(kernel, "MODULES_DIR", tmp_path / "lib-modules")
    monkeypatch.setattr(kernel, "HEADERS_ROOT", tmp_path / "usr-src")
    monkeypatch.setattr(kernel, "RUNTIME_DIR", tmp_path / "run")
    monkeypatch.setattr(kernel, "_presented", None)
    # set, then deleted: monkeypatch restores what was there (nothing) even though
    # resolve_headers sets BCC_KERNEL_SOURCE itself; a leak would send every later BCC
    # compile of this process to a deleted tmp tree
    for name in (kernel.BCC_KERNEL_SOURCE, kernel.HOST_ROOT_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    (tmp_path / "lib-modules").mkdir()
    _debian_pair(tmp_path / "usr-src", "6.1.0-57")
    return tmp_path


def test_split_tree_is_merged_into_one_directory_for_bcc(layout: Path) -> None:
    tree = kernel.resolve_headers(release="6.18.44-test")
    assert tree.usable and not tree.exact
    assert tree.build is not None and tree.build.is_relative_to(layout / "run")
    # both halves visible from the one directory BCC_KERNEL_SOURCE names
    assert (tree.build / "include" / "linux" / "kconfig.h").is_file()
    assert (tree.build / "include" / "generated" / "autoconf.h").is_file()
    assert (tree.build / "arch" / "x86" / "include" / "asm").is_dir()
    assert (tree.build / "arch" / "x86" / "include" / "generated").is_dir()
    assert os.environ[kernel.BCC_KERNEL_SOURCE] == str(tree.build)
    assert list((layout / "lib-modules").iterdir()) == []  # nothing written there


def test_read_only_scratch_falls_back_to_tmp(layout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ro = layout / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setattr(kernel, "RUNTIME_DIR", ro / "run")
    monkeypatch.setattr(kernel.tempfile, "tempdir", str(layout / "tmp"))
    (layout / "tmp").mkdir()
    if os.geteuid() == 0:  # root ignores the mode bits: make the first choice a file instead
        ro.chmod(0o700)
        (ro / "run").write_text("")
    tree = kernel.resolve_headers(release="6.18.44-test")
    assert tree.build is not None and tree.build.is_relative_to(layout / "tmp")


def test_nowhere_to_merge_is_a_reason_not_a_traceback(
    layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(dest: Path, sources: list[Path]) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(kernel, "_merge", refuse)
    tree = kernel.resolve_headers(release="6.18.44-test")
    assert not tree.usable and "cannot present them to BCC" in tree.detail
    assert kernel.BCC_KERNEL_SOURCE not in os.environ


def test_no_tree_anywhere_is_a_reason(layout: Path) -> None:
    shutil.rmtree(layout / "usr-src")
    tree = kernel.resolve_headers(release="6.18.44-test")
    assert not tree.usable and "no headers for 6.18.44-test" in tree.detail


def test_host_headers_are_used_first_when_they_match(
    layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = layout / "host"
    h_arch, h_common = _debian_pair(host / "usr" / "src", "6.18.44-test")
    kdir = host / "lib" / "modules" / "6.18.44-test"
    kdir.mkdir(parents=True)
    # absolute links, as the host wrote them: they point into the host's /usr/src
    (kdir / "build").symlink_to("/usr/src/linux-headers-6.18.44-test-amd64")
    (kdir / "source").symlink_to("/usr/src/linux-headers-6.18.44-test-common")
    monkeypatch.setenv(kernel.HOST_ROOT_ENV, str(host))
    tree = kernel.resolve_headers(release="6.18.44-test")
    assert tree.exact and tree.build is not None
    assert (tree.build / "include" / "generated").resolve() == h_arch / "include" / "generated"
    assert (tree.build / "include" / "linux").resolve() == h_common / "include" / "linux"
    # a host with headers for another kernel only: the image's nearest tree instead
    other = kernel.resolve_headers(release="6.19.0-other")
    assert not other.exact and other.build is not None
    assert (other.build / "include" / "linux").resolve().is_relative_to(layout / "usr-src")


def test_a_second_call_returns_what_this_process_presented(layout: Path) -> None:
    first = kernel.resolve_headers(release="6.18.44-test")
    again = kernel.resolve_headers(release="6.18.44-test")
    assert again == first


def test_bcc_kernel_source_set_by_the_user_is_respected(
    layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(kernel.BCC_KERNEL_SOURCE, str(layout / "usr-src" / "nothing"))
    tree = kernel.resolve_headers(release="6.18.44-test")
    assert not tree.usable and "has no include/" in tree.detail


def test_resolve_in_root_follows_absolute_and_relative_links(tmp_path: Path) -> None:
    (tmp_path / "usr" / "src" / "k").mkdir(parents=True)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "abs").symlink_to("/usr/src/k")
    (tmp_path / "lib" / "rel").symlink_to("../usr/src/k")
    assert kernel.resolve_in_root(tmp_path, "/lib/abs") == tmp_path / "usr" / "src" / "k"
    assert kernel.resolve_in_root(tmp_path, "/lib/rel") == tmp_path / "usr" / "src" / "k"
    (tmp_path / "lib" / "escape").symlink_to("../../../../etc")
    assert kernel.resolve_in_root(tmp_path, "/lib/escape") == tmp_path / "etc"


def test_the_merged_tree_is_readable_by_other_users(layout: Path) -> None:
    """A capture by another user with CAP_BPF compiles against the tree root merged first
    (before: mkdtemp's 0700 stayed, and doctor as that user ended in "Permission denied")."""
    tree = kernel.resolve_headers(release="6.18.44-test")
    assert tree.build is not None
    assert tree.build.stat().st_mode & 0o777 == 0o755


def test_a_tree_an_earlier_version_left_0700_is_opened_up(
    layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = kernel.resolve_headers(release="6.18.44-test")
    assert first.build is not None
    first.build.chmod(0o700)
    monkeypatch.setattr(kernel, "_presented", None)
    monkeypatch.delenv(kernel.BCC_KERNEL_SOURCE)
    again = kernel.resolve_headers(release="6.18.44-test")
    assert again.build == first.build
    assert again.build.stat().st_mode & 0o777 == 0o755
