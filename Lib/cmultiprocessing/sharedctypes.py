"""ctypes objects in shared memory: RawValue and RawArray (plain), Value and
Array (behind a lock), and the wrappers that take the lock around every
access.  The bytes come from the native heap (see heap.py)."""

import ctypes
import sys
import weakref

from . import heap
from . import get_context
from .context import BaseContext, reduction, assert_spawning
from .synchronize import _SEM_IN_MEMORY_SIZE, _rlock_in_memory

_ForkingPickler = reduction.ForkingPickler

__all__ = ['RawValue', 'RawArray', 'Value', 'Array', 'copy', 'synchronized']

typecode_to_type = {
    code: getattr(ctypes, 'c_' + ctype) for code, ctype in (
        ('c', 'char'), ('u', 'wchar'), ('b', 'byte'), ('B', 'ubyte'),
        ('h', 'short'), ('H', 'ushort'), ('i', 'int'), ('I', 'uint'),
        ('l', 'long'), ('L', 'ulong'), ('q', 'longlong'),
        ('Q', 'ulonglong'), ('f', 'float'), ('d', 'double'))
}

# ctypes types whose instances ForkingPickler already knows how to send.
_picklable_types = set()

# 3.15 names the accepted typecodes when given something without a size
# (earlier versions let ctypes.sizeof()'s own TypeError through).
if sys.version_info >= (3, 15):
    _BAD_TYPECODE = ('bad typecode (must be a ctypes type or one of '
                     'c, b, B, u, h, H, i, I, l, L, q, Q, f or d)')
else:
    _BAD_TYPECODE = None


def _ctype(typecode_or_type):
    return typecode_to_type.get(typecode_or_type, typecode_or_type)


def _make_picklable(type_):
    _ForkingPickler.register(type_, reduce_ctype)
    _picklable_types.add(type_)


def _on_block(type_, wrapper, block):
    """An instance of ctypes `type_` living in `block` (any writable
    buffer), kept alive together with `wrapper`."""
    if type_ not in _picklable_types:
        _make_picklable(type_)
    obj = type_.from_buffer(block)
    obj._wrapper = wrapper
    return obj


_sizeof = ctypes.sizeof
_new_object = object.__new__


def _zeroed(type_):
    "A zero-filled instance of ctypes `type_` in shared memory."
    # The allocation fast path: _on_block() and BufferWrapper.__init__
    # inlined (a Python-level call less each), as small objects made by
    # the thousand spend more time here than in the heap itself.
    try:
        size = _sizeof(type_)
    except TypeError as exc:
        if _BAD_TYPECODE is None:
            raise
        raise TypeError(_BAD_TYPECODE) from exc
    wrapper_type = heap.BufferWrapper
    wrapper = _new_object(wrapper_type)
    block = wrapper._block = wrapper_type._heap.take(size)
    if type_ not in _picklable_types:
        _make_picklable(type_)
    obj = type_.from_buffer(block)
    obj._wrapper = wrapper
    return obj


def RawValue(typecode_or_type, *args):
    '''
    Returns a ctypes object allocated from shared memory
    '''
    obj = _zeroed(_ctype(typecode_or_type))
    if args:
        obj.__init__(*args)
    return obj


def RawArray(typecode_or_type, size_or_initializer):
    '''
    Returns a ctypes array allocated from shared memory
    '''
    item_type = _ctype(typecode_or_type)
    if isinstance(size_or_initializer, int):
        return _zeroed(item_type * size_or_initializer)
    items = size_or_initializer
    obj = _zeroed(item_type * len(items))
    obj.__init__(*items)
    return obj


_base_rlock = BaseContext.RLock


def _guard_for(lock, ctx):
    """The lock Value() and Array() wrap their object with: a new RLock for
    True or None, `lock` itself if it is a lock, None for False.  (Asked
    after the object is made, as in the stdlib: a bad typecode is reported
    before a bad lock.)

    In a fork context the new RLock's semaphore is made in shared memory
    rather than by name (synchronize._rlock_in_memory), where the OS can:
    nothing but a forked child can reach the lock, as nothing but a forked
    child can reach the value without pickling it, so the lock's memory
    lives as long as the value's own (the wrapper holds both), and a child
    that outlives both is exposed to reuse of the lock's memory exactly as
    it is to reuse of the value's."""
    if lock is False:
        return None
    if lock in (True, None):
        ctx = ctx or get_context()
        if (_SEM_IN_MEMORY_SIZE and type(ctx).RLock is _base_rlock
                and ctx.get_start_method() == 'fork'):
            return _rlock_in_memory()
        return ctx.RLock()
    if not hasattr(lock, 'acquire'):
        raise AttributeError("%r has no method 'acquire'" % lock)
    return lock


def Value(typecode_or_type, *args, lock=True, ctx=None):
    '''
    Return a synchronization wrapper for a Value
    '''
    obj = RawValue(typecode_or_type, *args)
    guard = _guard_for(lock, ctx)
    return obj if guard is None else synchronized(obj, guard, ctx=ctx)


def Array(typecode_or_type, size_or_initializer, *, lock=True, ctx=None):
    '''
    Return a synchronization wrapper for a RawArray
    '''
    obj = RawArray(typecode_or_type, size_or_initializer)
    guard = _guard_for(lock, ctx)
    return obj if guard is None else synchronized(obj, guard, ctx=ctx)


def copy(obj):
    "A copy of ctypes object `obj` in shared memory."
    new_obj = _zeroed(type(obj))
    ctypes.memmove(ctypes.addressof(new_obj), ctypes.addressof(obj),
                   ctypes.sizeof(new_obj))
    return new_obj


def _wrapper_class(cls):
    if issubclass(cls, ctypes._SimpleCData):
        return Synchronized
    if issubclass(cls, ctypes.Array):
        if cls._type_ is ctypes.c_char:
            return SynchronizedString
        return SynchronizedArray
    scls = class_cache.get(cls)
    if scls is None:
        fields = {field[0]: make_property(field[0]) for field in cls._fields_}
        scls = type('Synchronized' + cls.__name__, (SynchronizedBase,),
                    fields)
        class_cache[cls] = scls
    return scls


def synchronized(obj, lock=None, ctx=None):
    "Wrap ctypes object `obj` so that every access holds `lock`."
    if isinstance(obj, SynchronizedBase):
        raise AssertionError('object already synchronized')
    return _wrapper_class(type(obj))(obj, lock, ctx or get_context())


#
# Sending shared ctypes objects to spawned children
#

def reduce_ctype(obj):
    assert_spawning(obj)
    if isinstance(obj, ctypes.Array):
        return rebuild_ctype, (obj._type_, obj._wrapper, obj._length_)
    return rebuild_ctype, (type(obj), obj._wrapper, None)


def rebuild_ctype(type_, wrapper, length):
    if length is not None:
        type_ = type_ * length
    return _on_block(type_, wrapper, wrapper.create_memoryview())


#
# Attribute access under the lock
#

prop_cache = {}
class_cache = weakref.WeakKeyDictionary()


def make_property(name):
    "A property forwarding attribute `name` to the wrapped object, locked."
    prop = prop_cache.get(name)
    if prop is not None:
        return prop

    # The lock's bound acquire/release (set on each wrapper) are cheaper
    # than a with-statement on this hot path; a failing access still
    # releases the lock.
    def fget(self):
        self.acquire()
        try:
            current = getattr(self._obj, name)
        except BaseException:
            self.release()
            raise
        self.release()
        return current

    def fset(self, new):
        self.acquire()
        try:
            setattr(self._obj, name, new)
        except BaseException:
            self.release()
            raise
        self.release()

    prop = prop_cache[name] = property(fget, fset, None,
                                       f'{name} of the wrapped object')
    return prop


class SynchronizedBase(object):
    """A ctypes object together with the lock guarding it."""

    def __init__(self, obj, lock=None, ctx=None):
        if not lock:
            lock = (ctx or get_context(force=True)).RLock()
        self._obj, self._lock = obj, lock
        self.acquire, self.release = lock.acquire, lock.release

    def get_lock(self):
        return self._lock

    def get_obj(self):
        return self._obj

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *args):
        return self._lock.__exit__(*args)

    def __repr__(self):
        return f'<{type(self).__name__} wrapper for {self._obj}>'

    def __reduce__(self):
        assert_spawning(self)
        return synchronized, (self._obj, self._lock)


class Synchronized(SynchronizedBase):
    """A shared ctypes simple value behind a lock."""

    # make_property('value') spelled out: a plain attribute access beats
    # getattr() on the path every counter increment takes.
    def _value_get(self):
        self.acquire()
        try:
            current = self._obj.value
        except BaseException:
            self.release()
            raise
        self.release()
        return current

    def _value_set(self, new):
        self.acquire()
        try:
            self._obj.value = new
        except BaseException:
            self.release()
            raise
        self.release()

    value = property(_value_get, _value_set, None,
                     'value of the wrapped object')


class SynchronizedArray(SynchronizedBase):

    def __len__(self):
        return len(self._obj)

    def __getitem__(self, i):
        with self._lock:
            return self._obj[i]

    def __setitem__(self, i, value):
        with self._lock:
            self._obj[i] = value

    def __getslice__(self, start, stop):
        return self[start:stop]

    def __setslice__(self, start, stop, values):
        self[start:stop] = values


class SynchronizedString(SynchronizedArray):
    value = make_property('value')
    raw = make_property('raw')
