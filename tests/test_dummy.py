"""Unit tests of cmultiprocessing.dummy: the thread-backed API must behave
exactly as the stdlib's multiprocessing.dummy (the suite's "threads"
variants run on it), so most checks run against both."""
import array
import multiprocessing.dummy as std_dummy
import queue
import threading
import time

import pytest

import cmultiprocessing.dummy as cmp_dummy
from cmultiprocessing.dummy import connection as cmp_conn

LONG = 60.0


@pytest.fixture(params=['cmp', 'std'])
def dummy(request):
    return cmp_dummy if request.param == 'cmp' else std_dummy


def test_same_public_names():
    assert sorted(cmp_dummy.__all__) == sorted(std_dummy.__all__)
    for name in std_dummy.__all__ + ['Namespace', 'Value', 'Array', 'dict',
                                     'list', 'shutdown', 'DummyProcess']:
        assert hasattr(cmp_dummy, name), name
    assert sorted(cmp_conn.__all__) == sorted(std_dummy.connection.__all__)
    assert cmp_conn.families == [None]
    for name in ('Lock', 'RLock', 'Semaphore', 'BoundedSemaphore',
                 'Condition', 'Event', 'Barrier'):
        assert getattr(cmp_dummy, name) is getattr(threading, name)
    assert cmp_dummy.Queue is queue.Queue is cmp_dummy.JoinableQueue
    assert cmp_dummy.dict is dict and cmp_dummy.list is list


def test_process_life_cycle(dummy):
    ran = threading.Event()
    p = dummy.Process(target=ran.set, name='worker')
    assert p.exitcode is None and p.name == 'worker'
    assert p._parent is dummy.current_process()
    p.start()
    p.join(LONG)
    assert ran.is_set() and p.exitcode == 0
    assert p not in dummy.active_children()


def test_active_children_lists_running_threads(dummy):
    gate = threading.Event()
    p = dummy.Process(target=gate.wait, args=(LONG,))
    p.start()
    try:
        assert p in dummy.active_children()
    finally:
        gate.set()
        p.join(LONG)
    assert p not in dummy.active_children()


def test_start_from_another_thread_is_refused(dummy):
    p = dummy.Process(target=lambda: None)
    errors = []

    def other():
        try:
            p.start()
        except RuntimeError as exc:
            errors.append(exc)
    t = threading.Thread(target=other)
    t.start()
    t.join(LONG)
    assert errors and 'Parent is' in str(errors[0])


def test_children_of_children(dummy):
    seen = []

    def parent_body():
        child = dummy.Process(target=time.sleep, args=(0,))
        child.start()
        child.join(LONG)
        seen.append(child.exitcode)
    p = dummy.Process(target=parent_body)
    p.start()
    p.join(LONG)
    assert seen == [0]


def test_values_arrays_namespaces(dummy):
    v = dummy.Value('i', 3)
    v.value += 1
    assert v.value == 4 and repr(v) == "<Value('i', 4)>"
    a = dummy.Array('d', [1.0, 2.0], lock=False)
    assert isinstance(a, array.array) and a.typecode == 'd'
    ns = dummy.Namespace(b=2, a1=1, a=0, _hidden=3)
    assert repr(ns) == 'Namespace(a1=1, a=0, b=2)'
    assert dummy.Manager() is dummy
    assert dummy.shutdown() is None and dummy.freeze_support() is None


def test_pipe_both_ways(dummy):
    left, right = dummy.Pipe()
    assert not left.poll()
    left.send('ping')
    assert right.poll() and right.recv() == 'ping'
    right.send_bytes(b'pong')
    assert left.recv_bytes() == b'pong'
    with left, right:
        pass


def test_poll_waits_for_data(dummy):
    left, right = dummy.Pipe()
    timer = threading.Timer(0.05, left.send, args=('late',))
    timer.start()
    try:
        assert right.poll(LONG)
        assert right.recv() == 'late'
        assert not right.poll(0.01)
    finally:
        timer.cancel()


@pytest.mark.parametrize('conn_module', [cmp_conn, std_dummy.connection])
def test_listener_and_client(conn_module):
    with conn_module.Listener() as listener:
        client = conn_module.Client(listener.address)
        server = listener.accept()
        client.send('hello')
        assert server.recv() == 'hello'
        server.send(b'back')
        assert client.recv() == b'back'
    assert listener.address is None


def test_thread_pool(dummy):
    with dummy.Pool(2) as p:
        assert p.map(abs, [-1, -2, 3]) == [1, 2, 3]
        assert p.apply(pow, (2, 5)) == 32
    p.join()


def test_pool_initializer():
    local = threading.local()
    seen = []

    def init(tag):
        local.tag = tag

    def work(_):
        seen.append(local.tag)
        return local.tag
    with cmp_dummy.Pool(2, init, ('t',)) as p:
        assert p.map(work, range(6), 1) == ['t'] * 6
    p.join()
