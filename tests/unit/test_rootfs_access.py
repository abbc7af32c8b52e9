"""RootedFS: every path resolves inside the root, whatever the sandbox planted there.

A plain temporary directory stands for the sandbox root; another one next to it ("host") stands
for the host's files, which no operation may ever reach.
"""
from __future__ import annotations

import errno
import os
import stat

import pytest

from localsb.api.errors import (AlreadyExists, FileNotFoundInSandbox, LocalsbError,
                                ValidationError)
from localsb.linux import rootfs_access as ra
from localsb.linux.rootfs_access import RootedFS, normalize, openat2


@pytest.fixture
def rfs(root):
    with RootedFS(str(root)) as fs:
        yield fs


def ws(root):
    return root / "home/agentuity"


def host_unchanged(host):
    assert sorted(os.listdir(host)) == ["secret", "subdir"]
    assert (host / "secret").read_text() == "host secret\n"
    assert os.listdir(host / "subdir") == []


# -- normalisation ------------------------------------------------------------------------------

@pytest.mark.parametrize("given,expected", [
    (".", "/home/agentuity"),
    ("", "/home/agentuity"),
    ("a/b", "/home/agentuity/a/b"),
    ("a/./b/", "/home/agentuity/a/b"),
    ("/etc/x", "/etc/x"),
    ("../../../../etc/passwd", "/etc/passwd"),
    ("/../..//x", "/x"),
    ("//x", "/x"),
    ("///", "/"),
    (b"rel", "/home/agentuity/rel"),
])
def test_normalize(given, expected):
    assert normalize(given) == expected


def test_nul_rejected_everywhere(rfs):
    bad = "a\0/../../etc/shadow"
    for op in (rfs.stat, rfs.lstat, rfs.readlink, rfs.unlink, rfs.rmdir, rfs.listdir,
               rfs.mkdir, lambda p: rfs.open_file(p), lambda p: list(rfs.walk(p)),
               lambda p: rfs.open_regular(p), lambda p: rfs.open_for_write(p)):
        with pytest.raises(ValidationError, match="NUL"):
            op(bad)
    with pytest.raises(ValidationError, match="NUL"):
        rfs.symlink("x\0y", "link")


def test_openat2_mechanism(root, host):
    # The kernel interface itself: RESOLVE_IN_ROOT clamps an absolute symlink into the root.
    os.symlink(str(host / "secret"), ws(root) / "abs")
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as ei:
            openat2(rootfd, "/home/agentuity/abs", os.O_RDONLY, 0, ra.IN_ROOT)
        assert ei.value.errno == errno.ENOENT
        # the same path without RESOLVE_IN_ROOT does reach the host file: the test is meaningful
        fd = openat2(rootfd, "home/agentuity/abs", os.O_RDONLY)
        assert os.read(fd, 100) == b"host secret\n"
        os.close(fd)
        with pytest.raises(OSError) as ei:
            openat2(rootfd, "home/agentuity/abs", os.O_RDONLY, 0, ra.STRICT_BENEATH)
        assert ei.value.errno in (errno.ELOOP, errno.EXDEV)
    finally:
        os.close(rootfd)


# -- escapes ------------------------------------------------------------------------------------

def test_absolute_symlink_stays_in_root(rfs, root, host):
    os.symlink(str(host / "secret"), ws(root) / "abs")
    with pytest.raises(FileNotFoundInSandbox, match="/home/agentuity/abs"):
        rfs.open_regular("abs")
    # once the sandbox has a file at that path, the link reads the sandbox's file
    inside = root / str(host / "secret").lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("sandbox copy\n")
    fd, _, _ = rfs.open_regular("abs")
    assert os.read(fd, 100) == b"sandbox copy\n"
    os.close(fd)


def test_dotdot_symlink_clamped(rfs, root, host):
    rel = os.path.relpath(host / "secret", ws(root))   # ../../../host/secret
    os.symlink(rel, ws(root) / "rel")
    with pytest.raises(FileNotFoundInSandbox):
        rfs.open_regular("rel")
    with pytest.raises(FileNotFoundInSandbox):
        rfs.stat("../../../../../../" + str(host / "secret"))


def test_etc_shadow_via_planted_symlink(rfs, root):
    os.symlink("/etc/shadow", ws(root) / "shadow")
    os.symlink("../../../../../../../../etc/shadow", ws(root) / "shadow2")
    for name in ("shadow", "shadow2", "/etc/shadow", "../../../etc/shadow"):
        with pytest.raises(FileNotFoundInSandbox):
            rfs.open_regular(name)


def test_symlinked_parent_dir_stays_in_root(rfs, root, host):
    os.symlink(str(host), ws(root) / "d")
    with pytest.raises(FileNotFoundInSandbox):
        rfs.stat("d/secret")
    with pytest.raises(FileNotFoundInSandbox):
        rfs.mkdir("d/new")
    # like mkdir(1) -p, a dangling symlink in the way is an error...
    with pytest.raises(ValidationError, match="File exists and is not a directory: "
                                              "/home/agentuity/d"):
        rfs.mkdir("d/new", parents=True)
    # ...and once the link's target exists in the sandbox, the directory is made there
    inside = root / str(host).lstrip("/")
    inside.mkdir(parents=True)
    assert rfs.mkdir("d/new", parents=True) == ["/home/agentuity/d/new"]
    assert (inside / "new").is_dir()
    with pytest.raises(FileNotFoundInSandbox):
        rfs.unlink("d/secret")
    host_unchanged(host)


def test_symlink_loop_is_eloop(rfs, root):
    os.symlink("loop", ws(root) / "loop")
    os.symlink("b", ws(root) / "a")
    os.symlink("a", ws(root) / "b")
    for p in ("loop", "a", "loop/x"):
        with pytest.raises(ValidationError, match="Too many levels of symbolic links: "
                                                  "/home/agentuity/"):
            rfs.stat(p)
    # the link itself can still be looked at and removed
    assert stat.S_ISLNK(rfs.lstat("loop").st_mode)
    assert rfs.readlink("loop") == "loop"
    rfs.unlink("loop")
    assert not os.path.lexists(ws(root) / "loop")


def test_unlink_removes_link_not_target(rfs, root, host):
    os.symlink(str(host / "secret"), ws(root) / "l")
    (ws(root) / "t").write_text("x")
    os.symlink("t", ws(root) / "l2")
    rfs.unlink("l")
    rfs.unlink("l2")
    assert (ws(root) / "t").exists()
    host_unchanged(host)


def test_rmdir_recursive_never_follows(rfs, root, host):
    d = ws(root) / "tree"
    (d / "a/b").mkdir(parents=True)
    (d / "a/b/f").write_text("x")
    os.symlink(str(host), d / "a/hostlink")
    os.symlink(os.path.relpath(host, d / "a"), d / "a/rellink")
    (d / "ro").mkdir()
    (d / "ro/f").write_text("x")
    os.chmod(d / "ro", 0o555)
    rfs.rmdir("tree", recursive=True)
    assert not d.exists()
    host_unchanged(host)


@pytest.fixture
def many_fds():
    """Removal holds one descriptor per directory level: let a 2000-level tree be removed even
    where the soft limit is 1024."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if want < 2100:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for a 2000-level tree")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_rmdir_deep_tree(rfs, root, many_fds):
    # deeper than Python's recursion limit: the removal must be iterative
    p = ws(root) / "deep"
    p.mkdir()
    fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1200):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    rfs.rmdir("deep", recursive=True)
    assert not p.exists()


# -- errors ---------------------------------------------------------------------------------------

def test_errors_name_the_path(rfs, root):
    (ws(root) / "file").write_text("x")
    (ws(root) / "dir").mkdir()
    (ws(root) / "dir/x").write_text("x")
    with pytest.raises(FileNotFoundInSandbox, match=r"^No such file or directory: "
                                                    r"/home/agentuity/missing$"):
        rfs.stat("missing")
    with pytest.raises(ValidationError, match=r"^Not a directory: /home/agentuity/file/x$"):
        rfs.stat("file/x")
    with pytest.raises(AlreadyExists, match=r"^File exists: /home/agentuity/dir$"):
        rfs.mkdir("dir")
    with pytest.raises(ValidationError, match=r"File exists and is not a directory: "
                                              r"/home/agentuity/file"):
        rfs.mkdir("file", parents=True)
    with pytest.raises(FileNotFoundInSandbox, match="/home/agentuity/nope"):
        rfs.mkdir("nope/sub")
    with pytest.raises(ValidationError, match=r"^Is a directory: /home/agentuity/dir"):
        rfs.unlink("dir")
    with pytest.raises(ValidationError, match=r"^Not a directory: /home/agentuity/file$"):
        rfs.rmdir("file")
    with pytest.raises(ValidationError, match=r"^Directory not empty: /home/agentuity/dir "):
        rfs.rmdir("dir")
    with pytest.raises(ValidationError, match=r"Is a directory: /home/agentuity/dir"):
        rfs.open_regular("dir")
    with pytest.raises(ValidationError, match="Not a symbolic link"):
        rfs.readlink("file")
    for err in (FileNotFoundInSandbox, ValidationError, AlreadyExists):
        assert issubclass(err, LocalsbError)


def test_special_files_are_never_opened(rfs, root):
    os.mkfifo(ws(root) / "fifo")
    # a fifo opened for reading would block forever; it must be refused before open
    with pytest.raises(ValidationError, match="Not a regular file: /home/agentuity/fifo"):
        rfs.open_regular("fifo")
    with pytest.raises(ValidationError, match="Not a regular file"):
        rfs.open_for_write("fifo")


def test_mkdir_parents_and_created_list(rfs, root):
    assert rfs.mkdir("x/y/z", parents=True) == ["/home/agentuity/x", "/home/agentuity/x/y",
                                                "/home/agentuity/x/y/z"]
    assert rfs.mkdir("x/y/z", parents=True) == []
    assert rfs.mkdir("/", parents=True) == []
    (ws(root) / "real").mkdir()
    os.symlink("real", ws(root) / "alias")
    assert rfs.mkdir("alias", parents=True) == []   # a symlink to a directory will do


def test_open_for_write_through_dangling_symlink_creates_inside(rfs, root, host):
    os.symlink(str(host / "newfile"), ws(root) / "dangling")
    inside_dir = root / str(host).lstrip("/")
    with pytest.raises(FileNotFoundInSandbox):
        rfs.open_for_write("dangling")
    inside_dir.mkdir(parents=True)
    fd, _ = rfs.open_for_write("dangling")
    os.write(fd, b"data")
    os.close(fd)
    assert (inside_dir / "newfile").read_bytes() == b"data"
    assert not (host / "newfile").exists()


# -- listing --------------------------------------------------------------------------------------

def test_listdir_fileinfo(rfs, root):
    d = ws(root)
    (d / "f.txt").write_bytes(b"12345")
    os.chmod(d / "f.txt", 0o640)
    os.utime(d / "f.txt", (1700000000, 1700000000))
    (d / "sub").mkdir()
    os.chmod(d / "sub", 0o2750)
    os.symlink("/etc/passwd", d / "ln")
    infos = {i["path"]: i for i in rfs.listdir(".")}
    assert list(infos) == ["f.txt", "ln", "sub"]
    assert infos["f.txt"] == {"path": "f.txt", "size": 5, "isDir": False, "mode": "0640",
                              "modTime": "2023-11-14T22:13:20Z"}
    assert infos["sub"]["isDir"] is True and infos["sub"]["mode"] == "2750"
    assert infos["ln"]["isSymlink"] is True and infos["ln"]["linkTarget"] == "/etc/passwd"
    assert infos["ln"]["isDir"] is False
    assert rfs.listdir("f.txt")[0]["path"] == "f.txt"
    with pytest.raises(FileNotFoundInSandbox):
        rfs.listdir("missing")


def test_walk_order_and_no_follow(rfs, root, host):
    d = ws(root) / "w"
    (d / "b/c").mkdir(parents=True)
    (d / "a.txt").write_text("a")
    (d / "b/c/z").write_text("z")
    os.symlink(str(host), d / "b/hostdir")
    rels = [e.rel for e in rfs.walk("w")]
    assert rels == ["a.txt", "b", "b/c", "b/c/z", "b/hostdir"]
    # the symlinked host directory is reported as a link, never entered
    assert not any(r.startswith("b/hostdir/") for r in rels)
    # a symlink to a directory named as the walk's top is followed (inside the root)
    os.symlink("w", ws(root) / "walias")
    assert [e.rel for e in rfs.walk("walias")] == rels
    # a file as the top yields itself
    assert [e.rel for e in rfs.walk("w/a.txt")] == ["a.txt"]


def test_owner_is_root_dir_owner(root):
    with RootedFS(str(root)) as fs:
        st = os.stat(root)
        assert fs.owner == (st.st_uid, st.st_gid)


def test_root_fd_accepted(root):
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        with RootedFS(fd) as fs:
            fs.mkdir("viafd")
        assert (ws(root) / "viafd").is_dir()
    finally:
        os.close(fd)


def test_missing_root_is_clear(tmp_path):
    from localsb.api.errors import HostError
    with pytest.raises(HostError, match="Sandbox root filesystem unavailable"):
        RootedFS(str(tmp_path / "nope"))


# -- races ----------------------------------------------------------------------------------------

def _flip_forever(d, host):
    # another process, so that it really runs concurrently with us (no GIL between us)
    while True:
        try:
            os.rename(d / "race", d / "race.dir")
            os.symlink(str(host), d / "race")
            os.unlink(d / "race")
            os.rename(d / "race.dir", d / "race")
        except OSError:
            pass


def test_race_swapping_dir_and_symlink(rfs, root, host):
    """A sandbox process flips a directory and a symlink to the host directory as fast as it can
    while we write, read, list and remove through it: nothing ever reaches the host."""
    import multiprocessing
    d = ws(root)
    (d / "race").mkdir()
    (d / "race/secret").write_text("sandbox")
    proc = multiprocessing.get_context("fork").Process(target=_flip_forever, args=(d, host),
                                                       daemon=True)
    proc.start()
    seen = set()
    try:
        for i in range(3000):
            for name, op in (("mkdir", lambda: rfs.mkdir("race/sub", exist_ok=True)),
                             ("write", lambda: os.close(rfs.open_for_write("race/f")[0])),
                             ("list", lambda: rfs.listdir("race")),
                             ("rm", lambda: rfs.unlink("race/f")),
                             ("read", lambda: os.close(rfs.open_regular("race/secret")[0]))):
                try:
                    op()
                    seen.add(name + " ok")
                except LocalsbError:
                    seen.add(name + " failed")
    finally:
        proc.kill()
        proc.join()
    host_unchanged(host)
    # the race really happened: some operations found the symlink in place
    assert "read failed" in seen and "read ok" in seen


def test_mkdir_parents_very_deep_path(rfs, root, many_fds):
    # ~2000 components: more than Python's recursion limit, within PATH_MAX
    deep = "/".join(["d"] * 2000)
    created = rfs.mkdir(deep, parents=True)
    assert len(created) == 2000
    assert rfs.mkdir(deep, parents=True) == []
    rfs.rmdir("d", recursive=True)
