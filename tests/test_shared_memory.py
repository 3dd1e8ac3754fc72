"""cmultiprocessing.shared_memory and the native segment calls under it
(_cmultiprocessing.shm_open / shm_unlink / shm_segment), side by side with
the stdlib where behaviour must match."""
import os
import pickle
import sys
import uuid

import pytest

import _cmultiprocessing
import cmultiprocessing
import cmultiprocessing.resource_tracker
from cmultiprocessing import shared_memory as sm

from support import shm_exists

POSIX = os.name == "posix"
HAS_TRACK = sys.version_info >= (3, 13)

pytestmark = pytest.mark.skipif(not POSIX, reason="POSIX segments")


def fresh_name(tag="t"):
    return "cmpt_%s_%d_%s" % (tag, os.getpid(), uuid.uuid4().hex[:8])


@pytest.fixture(scope="module", autouse=True)
def nothing_left_in_dev_shm():
    """Every segment this module creates must be gone at the end."""
    created = []
    real = _cmultiprocessing.shm_segment

    def recording(path, flags, *args):
        seg = real(path, flags, *args)
        if flags & os.O_CREAT:
            created.append(path)
        return seg
    _cmultiprocessing.shm_segment = recording
    try:
        yield
    finally:
        _cmultiprocessing.shm_segment = real
    assert created, "the recording hook saw nothing"
    left = [path for path in created if shm_exists(path)]
    assert not left, "segments left in /dev/shm: %r" % left


@pytest.fixture
def made():
    """Collects SharedMemory objects; closes and unlinks what is left."""
    objs = []
    yield objs
    for obj in objs:
        try:
            obj.close()
        except Exception:
            pass
        try:
            obj.unlink()
        except FileNotFoundError:
            pass


def std_untrack(name):
    # A stdlib SharedMemory registers with the stdlib's tracker even when
    # it only attaches; take that back so it does not unlink at exit.
    from multiprocessing import resource_tracker
    resource_tracker.unregister(name, "shared_memory")


def std_attach(name):
    from multiprocessing import shared_memory as std
    if HAS_TRACK:
        return std.SharedMemory(name, track=False)
    shm = std.SharedMemory(name)
    std_untrack(shm._name)
    return shm


# ---- the native calls ------------------------------------------------------

def test_native_open_unlink_roundtrip():
    path = "/" + fresh_name("native")
    fd = _cmultiprocessing.shm_open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR,
                                    mode=0o600)
    try:
        assert os.fstat(fd).st_size == 0
        assert not os.get_inheritable(fd)
        with pytest.raises(FileExistsError) as info:
            _cmultiprocessing.shm_open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR)
        assert info.value.filename == path
    finally:
        os.close(fd)
        _cmultiprocessing.shm_unlink(path)
    assert not shm_exists(path)
    with pytest.raises(FileNotFoundError):
        _cmultiprocessing.shm_unlink(path)
    with pytest.raises(FileNotFoundError):
        _cmultiprocessing.shm_open(path, os.O_RDWR)


def test_native_bad_arguments():
    with pytest.raises(TypeError):
        _cmultiprocessing.shm_open("/x", "rw")
    with pytest.raises(TypeError):
        _cmultiprocessing.shm_open("/x")
    with pytest.raises(TypeError):
        _cmultiprocessing.shm_open("/x", os.O_RDWR, bogus=1)
    with pytest.raises(ValueError):
        _cmultiprocessing.shm_open("/x\0y", os.O_RDWR)
    with pytest.raises(ValueError):
        _cmultiprocessing.shm_unlink("/x\0y")
    with pytest.raises(ValueError):
        _cmultiprocessing.shm_segment("/x", os.O_RDWR, 0o600, -1)
    with pytest.raises(TypeError):
        _cmultiprocessing.shm_segment(b"/x", os.O_RDWR)
    with pytest.raises(TypeError):
        _cmultiprocessing.SharedMemoryHandle()


def test_native_segment_refuses_close_while_viewed():
    path = "/" + fresh_name("seg")
    seg = _cmultiprocessing.shm_segment(
        path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600, 100)
    try:
        assert seg.size == 100 and seg.name == path and not seg.closed
        view = memoryview(seg)
        view[:3] = b"abc"
        with pytest.raises(BufferError):
            seg.close()
        assert bytes(view[:3]) == b"abc"        # still mapped and usable
        view.release()
        seg.close()
        seg.close()                             # twice is fine
        assert seg.closed and seg.fd == -1
        with pytest.raises(ValueError):
            memoryview(seg)
    finally:
        _cmultiprocessing.shm_unlink(path)


def test_native_empty_segment_is_a_clear_error():
    path = "/" + fresh_name("empty")
    fd = _cmultiprocessing.shm_open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR)
    os.close(fd)
    try:
        with pytest.raises(ValueError, match="empty"):
            _cmultiprocessing.shm_segment(path, os.O_RDWR)
    finally:
        _cmultiprocessing.shm_unlink(path)


# ---- SharedMemory ----------------------------------------------------------

def test_create_attach_close_unlink(made):
    name = fresh_name()
    a = sm.SharedMemory(name, create=True, size=512)
    made.append(a)
    assert a.name == name and a._name == "/" + name
    assert a.size == 512 and len(a.buf) == 512
    assert name in repr(a) and "512" in repr(a)
    a.buf[:5] = b"hello"
    b = sm.SharedMemory(name)
    assert bytes(b.buf[:5]) == b"hello"
    b.buf[0] = ord("j")
    assert bytes(a.buf[:5]) == b"jello"
    b.close()
    a.close()
    a.unlink()
    assert not shm_exists(name)
    made.clear()


def test_random_names(made):
    a = sm.SharedMemory(create=True, size=1)
    made.append(a)
    assert a._name.startswith(sm._SHM_NAME_PREFIX)
    assert len(a._name) <= sm._SHM_SAFE_NAME_LENGTH
    assert shm_exists(a.name)
    assert sm._make_filename() != sm._make_filename()


def test_name_collision_retries(made, monkeypatch):
    taken = sm.SharedMemory(create=True, size=1)
    made.append(taken)
    fresh = sm._SHM_NAME_PREFIX + fresh_name("c")[-8:]
    names = iter([taken._name, fresh])
    monkeypatch.setattr(sm, "_make_filename", lambda: next(names))
    other = sm.SharedMemory(create=True, size=1)
    made.append(other)
    assert other._name == fresh


@pytest.mark.parametrize("size", [0, -1, -100])
def test_create_needs_positive_size(size):
    with pytest.raises(ValueError):
        sm.SharedMemory(create=True, size=size)


def test_attach_with_negative_size():
    with pytest.raises(ValueError):
        sm.SharedMemory(fresh_name(), size=-1)


def test_attach_needs_a_name():
    with pytest.raises(ValueError, match="only be None if create=True"):
        sm.SharedMemory()


def test_missing_name():
    with pytest.raises(FileNotFoundError):
        sm.SharedMemory(fresh_name("missing"))


def test_name_with_nul():
    with pytest.raises(ValueError):
        sm.SharedMemory(fresh_name() + "\0x", create=True, size=8)
    with pytest.raises(ValueError):
        sm.SharedMemory(fresh_name() + "\0x")


def test_existing_name_on_create(made):
    a = sm.SharedMemory(create=True, size=16)
    made.append(a)
    with pytest.raises(FileExistsError):
        sm.SharedMemory(a.name, create=True, size=16)


def test_attach_with_larger_size_keeps_segment_size(made):
    # As in the stdlib: the size given on attach is ignored, the segment's
    # own size is what the mapping covers.
    a = sm.SharedMemory(create=True, size=100)
    made.append(a)
    b = sm.SharedMemory(a.name, size=1_000_000)
    assert b.size == 100 and len(b.buf) == 100
    b.close()


def test_buffer_after_close(made):
    a = sm.SharedMemory(create=True, size=64)
    made.append(a)
    view = a.buf
    a.close()
    assert a.buf is None
    with pytest.raises(TypeError):
        a.buf[0] = 1
    with pytest.raises(ValueError):
        view[0]
    a.close()                                   # idempotent


def test_close_refused_while_slices_live(made):
    a = sm.SharedMemory(create=True, size=64)
    made.append(a)
    part = a.buf[:8]
    with pytest.raises(BufferError):
        a.close()
    part[0] = 7                                 # memory still mapped
    part.release()
    a.close()
    assert a._fd == -1


def test_unlink_twice(made):
    a = sm.SharedMemory(create=True, size=64)
    made.append(a)
    b = sm.SharedMemory(a.name)
    b.unlink()
    b.close()
    with pytest.raises(FileNotFoundError):
        a.unlink()
    made.clear()
    a.close()


def test_optional_attach_subclass(made):
    a = sm.SharedMemory(create=True, size=300)
    made.append(a)

    class AttachOrCreate(sm.SharedMemory):
        _flags = os.O_CREAT | os.O_RDWR
    b = AttachOrCreate(a.name)
    assert b.size == a.size
    b.close()


@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickles_by_name(made, proto):
    a = sm.SharedMemory(create=True, size=32)
    made.append(a)
    data = pickle.dumps(a, protocol=proto)
    b = pickle.loads(data)
    assert b.name == a.name and b.size == a.size
    b.buf[:3] = b"xyz"
    assert bytes(a.buf[:3]) == b"xyz"
    b.close()
    a.close()
    a.unlink()
    made.clear()
    with pytest.raises(FileNotFoundError):
        pickle.loads(data)


@pytest.mark.skipif(not HAS_TRACK, reason="track= is 3.13's")
def test_track_false_does_not_register(made, monkeypatch):
    calls = []
    from cmultiprocessing import resource_tracker
    monkeypatch.setattr(resource_tracker, "register",
                        lambda *a: calls.append(("r",) + a))
    monkeypatch.setattr(resource_tracker, "unregister",
                        lambda *a: calls.append(("u",) + a))
    a = sm.SharedMemory(create=True, size=8, track=False)
    a.close()
    a.unlink()
    assert calls == []
    b = sm.SharedMemory(create=True, size=8)
    b.close()
    b.unlink()
    assert calls == [("r", b._name, "shared_memory"),
                     ("u", b._name, "shared_memory")]


@pytest.mark.skipif(HAS_TRACK, reason="before 3.13 there is no track=")
def test_no_track_parameter_before_313():
    with pytest.raises(TypeError):
        sm.SharedMemory(create=True, size=8, track=False)


def _write_by_name(name, data):
    shm = sm.SharedMemory(name)
    shm.buf[:len(data)] = data
    shm.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_across_processes(made, method):
    a = sm.SharedMemory(create=True, size=64)
    made.append(a)
    ctx = cmultiprocessing.get_context(method)
    p = ctx.Process(target=_write_by_name, args=(a.name, b"howdy"))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert bytes(a.buf[:5]) == b"howdy"


# ---- side by side with the stdlib -----------------------------------------

def _outcome(factory):
    try:
        shm = factory()
    except Exception as exc:
        return type(exc)
    try:
        return ("ok", shm.size)
    finally:
        shm.close()


def test_errors_match_stdlib(made):
    from multiprocessing import shared_memory as std
    base = sm.SharedMemory(create=True, size=200)
    made.append(base)
    cases = [
        dict(create=True, size=0),
        dict(create=True, size=-5),
        dict(create=False),
        dict(name=fresh_name("nope")),
        dict(name=base.name, create=True, size=10),
        dict(name=base.name, size=4000),
    ]
    for kwargs in cases:
        ours = _outcome(lambda kwargs=kwargs: sm.SharedMemory(**kwargs))
        if HAS_TRACK:
            theirs = _outcome(
                lambda kwargs=kwargs: std.SharedMemory(track=False, **kwargs))
        else:
            def make(kwargs=kwargs):
                shm = std.SharedMemory(**kwargs)
                std_untrack(shm._name)
                return shm
            theirs = _outcome(make)
        assert ours == theirs, kwargs


def test_stdlib_and_ours_share_bytes(made):
    ours = sm.SharedMemory(create=True, size=64)
    made.append(ours)
    theirs = std_attach(ours.name)
    theirs.buf[:4] = b"1234"
    assert bytes(ours.buf[:4]) == b"1234"
    assert theirs.size == ours.size
    theirs.close()


# ---- ShareableList ----------------------------------------------------------

@pytest.fixture
def lists():
    objs = []
    yield objs
    for sl in objs:
        sl.shm.close()
        try:
            sl.shm.unlink()
        except FileNotFoundError:
            pass


def test_shareable_list_basics(lists):
    sl = sm.ShareableList(['howdy', b'HoWdY', -273.154, 100, None, True, 42])
    lists.append(sl)
    assert len(sl) == 7
    assert list(sl) == ['howdy', b'HoWdY', -273.154, 100, None, True, 42]
    assert sl.format == '8s8sdqxxxxxx?xxxxxxxx?q'
    assert sl[-1] == 42 and sl[-7] == 'howdy'
    assert sl._get_packing_format(0) == '8s'
    assert sl.index(100) == 3 and sl.count(42) == 1
    with pytest.raises(ValueError):
        sl.index('absent')
    sl[4] = 'some'
    assert sl[4] == 'some' and sl.format == '8s8sdq8sxxxxxxx?q'
    sl[2] = 7
    assert sl[2] == 7 and sl._get_packing_format(2) == 'q'
    assert sl.shm.name in repr(sl)


def test_shareable_list_index_error_text_per_version(lists):
    # 3.14 stopped showing the missing value in the message.
    sl = sm.ShareableList([1, 'two'])
    lists.append(sl)
    with pytest.raises(ValueError) as info:
        sl.index('absent')
    if sys.version_info >= (3, 14):
        assert str(info.value) == "ShareableList.index(x): x not in list"
    else:
        assert str(info.value) == "'absent' not in this container"


def test_shareable_list_bad_indexes(lists):
    sl = sm.ShareableList([1, 2, 3])
    lists.append(sl)
    for i in (3, -4, 100):
        with pytest.raises(IndexError):
            sl[i]
        with pytest.raises(IndexError):
            sl[i] = 0
        with pytest.raises(IndexError):
            sl._get_packing_format(i)
    with pytest.raises(TypeError):
        sl["0"]


def test_shareable_list_storage_limits(lists):
    sl = sm.ShareableList(['abc', b'xyz'])
    lists.append(sl)
    with pytest.raises(ValueError, match="exceeds available storage"):
        sl[0] = 'far too long for this'
    with pytest.raises(ValueError, match="exceeds available storage"):
        sl[1] = b'123456789'
    assert sl[0] == 'abc' and sl[1] == b'xyz'
    sl[0] = '12345678'
    assert sl[0] == '12345678' and sl[1] == b'xyz'


def test_shareable_list_unsupported_types(lists):
    for bad in ([1, [2]], [{}], [1j], [object()]):
        with pytest.raises(TypeError):
            sm.ShareableList(bad)
        with pytest.raises(KeyError):          # what the stdlib raises
            sm.ShareableList(bad)
    sl = sm.ShareableList([1])
    lists.append(sl)
    with pytest.raises(TypeError):
        sl[0] = [1]
    assert sl[0] == 1


def test_shareable_list_non_ascii_strings_are_kept_whole(lists):
    text = 'é' * 9                              # 9 chars, 18 bytes in UTF-8
    sl = sm.ShareableList([text, 'encodés'])
    lists.append(sl)
    assert sl[0] == text and sl[1] == 'encodés'
    assert sl._get_packing_format(1) == '8s'    # the stdlib's room


def test_shareable_list_empty(lists):
    sl = sm.ShareableList()
    lists.append(sl)
    assert len(sl) == 0 and sl.format == '' and list(sl) == []
    assert sl.count(None) == 0


def test_shareable_list_attach_and_pickle(lists):
    sl = sm.ShareableList(range(10))
    lists.append(sl)
    other = sm.ShareableList(name=sl.shm.name)
    other[3] = 'new'
    assert sl[3] == 'new'
    other.shm.close()
    clone = pickle.loads(pickle.dumps(sl))
    assert list(clone) == list(sl)
    clone.shm.close()
    big = sm.ShareableList(range(300))
    lists.append(big)
    assert len(pickle.dumps(big)) == len(pickle.dumps(sl))


def test_shareable_list_copy_with_name(lists):
    sl = sm.ShareableList(['a', 2, None])
    lists.append(sl)
    name = fresh_name("copy")
    dup = sm.ShareableList(sl, name=name)
    lists.append(dup)
    assert dup.shm.name == name and list(dup) == list(sl)
    assert dup.format == sl.format


def test_shareable_list_is_binary_compatible_with_stdlib(lists):
    from multiprocessing import shared_memory as std
    items = ['howdy', b'bytes\x01', -1.5, 2 ** 40, None, False, 'encodés']
    ours = sm.ShareableList(items)
    lists.append(ours)
    # identical bytes to a stdlib list built from the same items
    theirs = std.ShareableList(items)
    try:
        assert bytes(ours.shm.buf) == bytes(theirs.shm.buf)
    finally:
        theirs.shm.close()
        theirs.shm.unlink()
    # the stdlib reads and writes ours ...
    view = std.ShareableList.__new__(std.ShareableList)
    view.shm = std_attach(ours.shm.name)
    view._list_len = len(view)
    view._allocated_offsets = list(
        __import__("struct").unpack_from(
            "q" * (view._list_len + 1), view.shm.buf, 8))
    assert list(view) == items
    view[3] = 'xy'
    assert ours[3] == 'xy' and ours.format == view.format
    view.shm.close()


def test_we_read_stdlib_lists(lists):
    from multiprocessing import shared_memory as std
    theirs = std.ShareableList([1, 'two', b'three', None, 4.5, True])
    try:
        ours = sm.ShareableList(name=theirs.shm.name)
        assert list(ours) == [1, 'two', b'three', None, 4.5, True]
        ours[0] = 'one'
        assert theirs[0] == 'one'
        ours.shm.close()
        # attaching registered the name with our tracker; the stdlib
        # list's owner unlinks it
        cmultiprocessing.resource_tracker.unregister(ours.shm._name,
                                                    "shared_memory")
    finally:
        theirs.shm.close()
        theirs.shm.unlink()


def test_class_getitem():
    assert sm.ShareableList[int].__origin__ is sm.ShareableList


# A segment larger than /dev/shm can hold: the stdlib makes it (ftruncate
# alone) and the process dies of SIGBUS when the writes reach past what the
# file system has; here the memory is reserved at creation, which fails
# with ENOSPC and leaves nothing behind.  /dev/shm is made small (8 MiB) in
# a mount namespace of the child's own, which takes root.
_FULL_DEV_SHM = r"""
import errno, os, sys
from cmultiprocessing import shared_memory
before = set(os.listdir('/dev/shm'))
try:
    seg = shared_memory.SharedMemory(create=True, size=64 << 20)
except OSError as e:
    print('refused', errno.errorcode.get(e.errno))
else:
    seg.buf[:] = b'x' * seg.size
    print('written')
print('left', sorted(set(os.listdir('/dev/shm')) - before))
# more than a quarter of the room: reserved at creation; a small one is
# left to its first touch
big = shared_memory.SharedMemory(create=True, size=4 << 20)
small = shared_memory.SharedMemory(create=True, size=64 << 10)
print('reserved', os.fstat(big._fd).st_blocks * 512 >= big.size,
      os.fstat(small._fd).st_blocks)
try:
    shared_memory.SharedMemory(create=True, size=6 << 20)
except OSError as e:
    print('no room left', errno.errorcode.get(e.errno))
big.buf[-1] = small.buf[-1] = 1
for seg in (big, small):
    seg.close()
    seg.unlink()
print('small ok')
"""


@pytest.mark.timeout(60)
@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="fallocate(2): Linux")
def test_segment_past_a_full_dev_shm_is_refused_at_creation(tmp_path):
    import shutil
    import subprocess
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1) for a small /dev/shm")
    script = tmp_path / "full_dev_shm.py"
    script.write_text(_FULL_DEV_SHM)
    out = subprocess.run(
        [unshare, "-m", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs -o size=8m tmpfs /dev/shm && exec "$0" "$1"',
         sys.executable, str(script)],
        capture_output=True, text=True, timeout=50)
    if out.returncode > 0 and out.stderr.startswith(("unshare:", "mount:")):
        # (a chroot, a container without the capability)
        pytest.skip("no private mount here: " + out.stderr.strip()[-200:])
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.split("\n")[:5] == [
        "refused ENOSPC", "left []", "reserved True 0",
        "no room left ENOSPC", "small ok"]
