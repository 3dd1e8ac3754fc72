"""Unit tests of cmultiprocessing.managers.

Besides the stdlib behaviour they check the failure paths: a manager whose
process dies makes proxy calls raise (never hang), and a server that cannot
start reports why in the caller.
"""
import copy
import errno
import gc
import os
import pickle
import signal
import socket
import sys
import threading
import time

import pytest

import cmultiprocessing as cmp
from cmultiprocessing import managers
from cmultiprocessing.managers import (BaseManager, BaseProxy, RemoteError,
                                       SyncManager)

from support import is_gone

LONG = 60.0
CTX = cmp.get_context('fork')


class Counter:
    def __init__(self, start=0):
        self.count = start

    def bump(self, by=1):
        self.count += by
        return self.count

    def fail(self):
        raise KeyError('counter failure')

    def _hidden(self):
        return 'hidden'

    def child(self):
        return Counter(self.count * 10)

    def get(self):
        return self.count


class CounterProxy(BaseProxy):
    _exposed_ = ('bump', 'get')

    def bump(self, by=1):
        return self._callmethod('bump', (by,))

    def get(self):
        return self._callmethod('get')


class MyManager(BaseManager):
    pass


MyManager.register('Counter', Counter)
MyManager.register('Hidden', Counter, exposed=('get', '_hidden'))
MyManager.register('Typed', Counter, CounterProxy)
MyManager.register('Parent', Counter, method_to_typeid={'child': 'Child'})
MyManager.register('Child', create_method=False)   # the object as returned


def failing_initializer():
    raise ValueError('manager initializer failed')


def child_appends(shared_list, shared_dict, ns, value):
    shared_list.append(os.getpid())
    shared_dict['child'] = value.value * 2
    ns.seen = True


@pytest.fixture
def manager():
    m = SyncManager(ctx=CTX)
    m.start()
    try:
        yield m
    finally:
        m.shutdown()


def test_sync_manager_types(manager):
    lst = manager.list([1, 2])
    lst.append(3)
    lst += [4]
    lst *= 2
    assert lst[:] == [1, 2, 3, 4, 1, 2, 3, 4] and len(lst) == 8
    d = manager.dict(a=1)
    d['b'] = 2
    assert d.copy() == {'a': 1, 'b': 2} and sorted(d.keys()) == ['a', 'b']
    assert list(iter(d)) in (['a', 'b'], ['b', 'a'])
    ns = manager.Namespace(x=1, _y=2)
    ns.z = 3
    assert (ns.x, ns.z) == (1, 3)
    assert 'x=1' in str(ns) and '_y' not in str(ns)
    del ns.z
    with pytest.raises(AttributeError):
        ns.z  # noqa: B018 -- the look-up is what raises
    v = manager.Value('i', 5)
    v.value += 1
    assert v.get() == 6 and v.value == 6
    a = manager.Array('i', [1, 2, 3])
    a[0] = 9
    assert (len(a), a[0], list(a[:])) == (3, 9, [9, 2, 3])
    q = manager.Queue()
    q.put('x')
    assert q.get(timeout=LONG) == 'x'
    jq = manager.JoinableQueue()
    jq.put(1)
    jq.get()
    jq.task_done()
    jq.join()
    ev = manager.Event()
    assert not ev.is_set() and not ev.wait(0.01)
    ev.set()
    assert ev.wait(LONG)
    for make in (manager.Lock, manager.RLock, manager.Semaphore,
                 manager.BoundedSemaphore):
        lock = make()
        assert lock.acquire(timeout=LONG)
        lock.release()
        with lock:
            pass
    cond = manager.Condition()
    with cond:
        assert cond.wait_for(lambda: True) is True
        assert cond.wait_for(lambda: 0, timeout=0.01) == 0
        cond.notify_all()
    barrier = manager.Barrier(1)
    assert barrier.parties == 1 and barrier.wait(LONG) == 0
    assert barrier.n_waiting == 0 and not barrier.broken


def test_pool_through_the_manager(manager):
    with manager.Pool(2) as p:
        assert p.map(abs, [-1, -2]) == [1, 2]
        assert p.apply_async(abs, (-3,)).get(LONG) == 3
        assert list(p.imap(abs, [-4, -5])) == [4, 5]
    with pytest.raises(RemoteError):
        manager.Pool(0)


def test_proxies_work_in_a_child_process(manager):
    lst, d, ns = manager.list(), manager.dict(), manager.Namespace()
    value = manager.Value('i', 21)
    p = CTX.Process(target=child_appends, args=(lst, d, ns, value))
    p.start()
    p.join(LONG)
    assert p.exitcode == 0
    assert lst[:] == [p.pid] and d['child'] == 42 and ns.seen is True


def test_spawned_child_gets_the_authkey(manager):
    lst, d, ns = manager.list(), manager.dict(), manager.Namespace()
    value = manager.Value('i', 1)
    p = cmp.get_context('spawn').Process(target=child_appends,
                                         args=(lst, d, ns, value))
    p.start()
    p.join(LONG)
    assert p.exitcode == 0 and d['child'] == 2


def test_nested_proxies_and_refcounts(manager):
    base = manager._number_of_objects()
    outer = manager.list()
    inner = manager.dict(k='v')
    outer.append(inner)
    assert outer[0]['k'] == 'v'
    assert manager._number_of_objects() == base + 2
    assert 'refcount=' in manager._debug_info()
    del outer, inner
    deadline = time.monotonic() + LONG
    while manager._number_of_objects() != base and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    assert manager._number_of_objects() == base


def test_custom_manager_registration():
    with MyManager(ctx=CTX) as m:
        c = m.Counter(5)
        assert c.bump() == 6 and c.bump(by=4) == 10
        assert hasattr(c, 'fail') and not hasattr(c, '_hidden')
        with pytest.raises(KeyError):
            c.fail()
        with pytest.raises(RemoteError):
            c._callmethod('_hidden')
        h = m.Hidden()
        assert h._hidden() == 'hidden' and not hasattr(h, 'bump')
        t = m.Typed(1)
        assert isinstance(t, CounterProxy) and t.bump() == 2
        parent = m.Parent(3)
        child = parent.child()
        assert isinstance(child, BaseProxy) and child.get() == 30
        assert copy.deepcopy(m.Counter(7)).count == 7
        assert str(c).startswith('<') and 'Counter' in repr(c)
    assert m._process.exitcode == 0


def test_state_errors():
    m = SyncManager(ctx=CTX)
    with pytest.raises(TypeError):
        m.start(initializer=5)
    m.start()
    try:
        with pytest.raises(cmp.ProcessError, match='Already started'):
            m.start()
        with pytest.raises(cmp.ProcessError, match='Already started'):
            m.get_server()
    finally:
        m.shutdown()
    with pytest.raises(cmp.ProcessError, match='shut down'):
        m.start()
    m.shutdown()            # a second shutdown does nothing
    with pytest.raises(KeyError):
        SyncManager(serializer='nonsense')


def test_failing_initializer_is_reported_in_the_caller():
    m = SyncManager(ctx=CTX)
    with pytest.raises(ValueError, match='manager initializer failed'):
        m.start(initializer=failing_initializer)
    m.join(LONG)


def test_address_in_use_is_reported_in_the_caller():
    holder = socket.socket()
    holder.bind(('127.0.0.1', 0))
    holder.listen()
    try:
        m = SyncManager(address=holder.getsockname(), ctx=CTX)
        with pytest.raises(OSError) as info:
            m.start()
        assert info.value.errno == errno.EADDRINUSE
        m.join(LONG)
    finally:
        holder.close()


def test_remote_manager_over_tcp_with_authkey():
    key = os.urandom(16)
    server = SyncManager(address=('127.0.0.1', 0), authkey=key, ctx=CTX)
    server.start()
    try:
        shared = server.dict(hello='world')
        client = SyncManager(address=server.address, authkey=key)
        client.connect()
        assert client._number_of_objects() >= 1
        stranger = SyncManager(address=server.address, authkey=b'wrong')
        with pytest.raises(cmp.AuthenticationError):
            stranger.connect()
        token = shared._token
        again = managers.DictProxy(token, 'pickle', authkey=key)
        assert again['hello'] == 'world'
        del again
    finally:
        server.shutdown()


def test_dead_manager_raises_instead_of_hanging():
    m = SyncManager(ctx=CTX)
    m.start()
    try:
        d = m.dict(a=1)
        assert d['a'] == 1
        os.kill(m._process.pid, signal.SIGKILL)
        m._process.join(LONG)
        with pytest.raises(EOFError, match='lost the connection'):
            d['a']
        # later calls fail fast too (nobody listens any more)
        with pytest.raises((ConnectionError, EOFError, OSError)):
            d['a']
    finally:
        m.shutdown()
    assert m._state.value == managers.State.SHUTDOWN


def test_server_in_a_thread_serves_a_client():
    m = MyManager(address=('127.0.0.1', 0), authkey=b'k')
    server = m.get_server()
    runner = threading.Thread(target=server.accepter, daemon=True)
    runner.start()
    client = MyManager(address=server.address, authkey=b'k')
    client.connect()
    c = client.Counter(1)
    assert c.bump() == 2
    del c
    server.stop_event.set()
    server.listener.close()


def test_token_and_remote_error_shapes():
    t = managers.Token('list', ('127.0.0.1', 1), 'ab')
    assert pickle.loads(pickle.dumps(t)).__getstate__() == t.__getstate__()
    assert repr(t) == "Token(typeid='list', address=('127.0.0.1', 1), id='ab')"
    err = RemoteError('remote text\n')
    assert str(err) == '\n' + '-' * 75 + '\nremote text\n' + '-' * 75
    assert isinstance(managers.convert_to_error('#ERROR', KeyError()),
                      KeyError)
    assert isinstance(managers.convert_to_error('#UNSERIALIZABLE', 'x'),
                      RemoteError)
    assert isinstance(managers.convert_to_error('#BOGUS', 'x'), ValueError)
    with pytest.raises(TypeError):
        managers.convert_to_error('#TRACEBACK', 5)


@pytest.mark.skipif(not managers.HAS_SHMEM, reason='no shared_memory')
def test_shared_memory_manager_unlinks_at_shutdown():
    with managers.SharedMemoryManager(ctx=CTX) as smm:
        block = smm.SharedMemory(64)
        shared = smm.ShareableList([1, 'two'])
        name = block.name
        assert shared[1] == 'two'
        block.close()
        shared.shm.close()
    assert not os.path.exists('/dev/shm/' + name.lstrip('/'))


def _start_manager_then_die(conn):
    m = SyncManager(ctx=CTX)
    m.start()
    conn.send(m._process.pid)
    os.kill(os.getpid(), signal.SIGKILL)


def test_manager_of_a_killed_parent_does_not_live_on():
    reader, writer = CTX.Pipe(duplex=False)
    middle = CTX.Process(target=_start_manager_then_die, args=(writer,))
    middle.start()
    writer.close()
    manager_pid = reader.recv()
    reader.close()
    middle.join(LONG)
    assert middle.exitcode == -signal.SIGKILL
    deadline = time.monotonic() + LONG
    while not is_gone(manager_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert is_gone(manager_pid)


# ---------------------------------------------------------------------------
# The surface that depends on the Python version (3.14 added it)

PY314 = sys.version_info >= (3, 14)
py314_only = pytest.mark.skipif(not PY314, reason='new in 3.14')


@py314_only
def test_lock_proxies_have_locked(manager):
    for make in (manager.Lock, manager.RLock, manager.Condition):
        lock = make()
        assert lock.locked() is False
        with lock:
            assert lock.locked() is True
        assert lock.locked() is False
    # exposed, but a threading.Semaphore has no locked(): the manager
    # answers with its traceback, as the stdlib's does
    with pytest.raises(RemoteError, match='locked'):
        manager.Semaphore().locked()


@py314_only
def test_list_and_dict_proxies_3_14(manager):
    import collections.abc
    lst = manager.list([3, 1])
    assert isinstance(lst, collections.abc.MutableSequence)
    copied = lst.copy()
    assert type(copied) is list and copied == [3, 1]
    lst.clear()
    assert len(lst) == 0
    d = manager.dict(foo=5)
    assert isinstance(d, collections.abc.MutableMapping)
    same = d
    d |= {'bar': 6}
    assert d is same and dict(d) == {'foo': 5, 'bar': 6}
    assert type(d | {'baz': 7}) is dict
    assert {'bar': 7, 'baz': 7} | d == {'foo': 5, 'bar': 6, 'baz': 7}
    assert list(reversed(d)) == ['bar', 'foo']
    assert d.fromkeys(['x'], 1) == {'x': 1}


@py314_only
def test_set_proxy(manager):
    import collections.abc
    s = manager.set('abc')
    assert isinstance(s, managers.SetProxy)
    # what the stdlib registers it as (not MutableSet)
    assert isinstance(s, collections.abc.MutableMapping)
    assert not isinstance(s, collections.abc.MutableSet)
    same = s
    for op, other, expect in (('|=', {'d'}, set('abcd')),
                              ('-=', {'a'}, set('bcd')),
                              ('^=', {'d', 'e'}, set('bce')),
                              ('&=', {'b', 'e', 'x'}, set('be'))):
        if op == '|=':
            s |= other
        elif op == '-=':
            s -= other
        elif op == '^=':
            s ^= other
        else:
            s &= other
        assert s is same and set(s) == expect, op
    assert {'q'} | s == set('beq') and s - {'b'} == {'e'}
    assert s < set('bez') and s >= {'b'} and 'b' in s and len(s) == 2
    assert managers.SetProxy[str] is not None
    with pytest.raises(RemoteError):
        manager.set(1234)


@pytest.mark.skipif(PY314, reason='3.11-3.13 surface')
def test_no_3_14_surface_before_3_14(manager):
    assert not hasattr(SyncManager, 'set')
    assert not hasattr(managers, 'SetProxy')
    assert not hasattr(manager.Lock(), 'locked')
    assert not hasattr(manager.list(), 'clear')
    assert not hasattr(manager.dict(), 'fromkeys')


def test_proxies_of_one_referent_have_distinct_serials(manager):
    """Each proxy counts once in its process's reference set, even when
    several stand for the same referent; when one dies the others keep
    the thread's connection."""
    lst = manager.list()
    twin = managers.RebuildProxy(*lst.__reduce__()[1])
    assert twin._id == lst._id and twin._serial != lst._serial
    assert {lst._serial, twin._serial} <= lst._all_serials
    lst.append(1)
    conn = lst._tls.connection
    del lst
    gc.collect()
    assert twin._serial in twin._all_serials
    assert twin[:] == [1]
    assert twin._tls.connection is conn    # not closed and reopened
