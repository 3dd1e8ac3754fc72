"""Named shared memory shared between processes: SharedMemory, a block of
bytes any process can attach to by name, and ShareableList, a fixed-length
list of simple values stored in such a block.

Opening, sizing and mapping a segment is one call into _cmultiprocessing
(shm_segment); the mapping is exposed as a memoryview through `buf`.
"""

import operator
import os
import struct
import sys
import types

import _cmultiprocessing

from . import resource_tracker

__all__ = ['SharedMemory', 'ShareableList']

_USE_POSIX = os.name != 'nt'

# Names stay within 14 characters, the limit of some BSDs.
_SHM_SAFE_NAME_LENGTH = 14
_SHM_NAME_PREFIX = '/psm_' if _USE_POSIX else 'wnsm_'

_O_CREX = os.O_CREAT | os.O_EXCL

# SharedMemory(track=...) appeared in 3.13.
_HAS_TRACK_PARAMETER = sys.version_info >= (3, 13)

# ShareableList.index() stopped showing the value it did not find in 3.14.
_INDEX_ERROR_IS_GENERIC = sys.version_info >= (3, 14)


def _make_filename():
    "A random name for a new segment (prefix + hex digits)."
    hex_digits = _SHM_SAFE_NAME_LENGTH - len(_SHM_NAME_PREFIX)
    if hex_digits < 4:
        raise ValueError('_SHM_NAME_PREFIX too long')
    return _SHM_NAME_PREFIX + os.urandom(hex_digits // 2).hex()


def _validate_size(size, create):
    if not size >= 0:
        raise ValueError("'size' must be a positive integer")
    if create and size == 0:
        raise ValueError(
            "'size' must be a positive number different from zero")


class SharedMemory:
    """A block of shared memory, created anew or attached to by name.

    SharedMemory(create=True, size=n) makes a block with a fresh name;
    SharedMemory(name) attaches to an existing one (its size is read from
    the system; a size given on attach is ignored).  close() releases this
    process's view; unlink() destroys the block, once, when no process
    needs it any more."""

    # Class-level defaults: close() and unlink() work on a half-built
    # object, and subclasses may change the open flags or mode.
    _name = None
    _handle = None
    _buf = None
    _size = 0
    _flags = os.O_RDWR
    _mode = 0o600
    _prepend_leading_slash = _USE_POSIX
    _track = True

    if _HAS_TRACK_PARAMETER:
        def __init__(self, name=None, create=False, size=0, *, track=True):
            self._attach_or_create(name, create, size, track)
    else:
        def __init__(self, name=None, create=False, size=0):
            self._attach_or_create(name, create, size, True)

    def _attach_or_create(self, name, create, size, track):
        _validate_size(size, create)
        flags = (_O_CREX | os.O_RDWR) if create else self._flags
        if name is None and not flags & os.O_EXCL:
            raise ValueError("'name' can only be None if create=True")
        self._track = track
        truncate_to = size if create else 0
        if name is None:
            handle = self._open_unused_name(flags, truncate_to)
        else:
            if self._prepend_leading_slash:
                name = '/' + name
            handle = _cmultiprocessing.shm_segment(
                name, flags, self._mode, truncate_to)
        self._handle = handle
        self._name = handle.name
        self._size = handle.size
        self._buf = memoryview(handle)
        if _USE_POSIX and track:
            resource_tracker.register(self._name, "shared_memory")

    def _open_unused_name(self, flags, truncate_to):
        while True:
            candidate = _make_filename()
            try:
                return _cmultiprocessing.shm_segment(
                    candidate, flags, self._mode, truncate_to)
            except FileExistsError:
                pass

    @property
    def _fd(self):
        handle = self._handle
        return -1 if handle is None else handle.fd

    def __del__(self):
        # Garbage collection must not fail on a segment that is gone (and
        # has nothing to do for one closed already).
        if self._handle is not None or self._buf is not None:
            try:
                self.close()
            except OSError:
                pass

    def __repr__(self):
        return f'{type(self).__name__}({self.name!r}, size={self.size})'

    @property
    def buf(self):
        "A memoryview of the block's bytes (None once closed)."
        return self._buf

    @property
    def name(self):
        "The name other processes attach with."
        name = self._name
        if self._prepend_leading_slash and name and name[0] == '/':
            return name[1:]
        return name

    @property
    def size(self):
        "Size in bytes."
        return self._size

    def close(self):
        """Release this object's view of the block; the block itself (and
        other processes' views) stay.  Fails with BufferError while slices
        of `buf` are still alive."""
        view = self._buf
        if view is not None:
            self._buf = None
            view.release()
        handle = self._handle
        if handle is not None:
            handle.close()
            self._handle = None

    def __reduce__(self):
        # Another process attaches by name, with the size it has now.
        return type(self), (self.name, False, self.size)

    def unlink(self):
        """Destroy the block's name so that the memory is freed once every
        process has closed it.  Call it once, in one process."""
        name = self._name
        if not (_USE_POSIX and name):
            return
        _cmultiprocessing.shm_unlink(name)
        if self._track:
            resource_tracker.unregister(name, "shared_memory")


# ---------------------------------------------------------------------------
# ShareableList
#
# Block layout (the stdlib's, so either implementation reads the other's):
#
#   [count: q] [count + 1 data offsets: q ...]       header
#   [item payloads, each 8 bytes or a multiple of 8] data
#   [count struct formats, 8 bytes each, NUL-padded] formats
#   [count decode codes, 1 byte each]                codes
#
# All integers in native byte order; every field starts at a multiple of 8.
# ---------------------------------------------------------------------------

_ENCODING = 'utf8'
_WORD = 8
_FORMAT_FIELD = struct.Struct('8s')

# Decode codes: how the unpacked value turns back into the stored object.
_PLAIN, _TEXT, _BYTES, _NONE = 0, 1, 2, 3

_fixed_layouts = {
    int: ('q', _PLAIN),
    float: ('d', _PLAIN),
    bool: ('xxxxxxx?', _PLAIN),
    type(None): ('xxxxxx?x', _NONE),
}


class _UnstorableItem(TypeError, KeyError):
    """An item of a type ShareableList cannot store (a KeyError too, which
    is what the standard library raises)."""

    def __str__(self):
        return str(self.args[0])


def _room_for(nbytes):
    "Bytes reserved for a str/bytes payload of nbytes."
    return (nbytes // _WORD + 1) * _WORD


def _describe(value):
    """(format, payload, code) storing `value`; payload is what struct
    packs with the format."""
    kind = type(value)
    if kind is str:
        raw = value.encode(_ENCODING)
        # Room by character count, as the stdlib reserves it, unless the
        # UTF-8 bytes need more (the stdlib would cut them short there).
        room = _room_for(len(value))
        if len(raw) > room:
            room = _room_for(len(raw))
        return f'{room}s', raw, _TEXT
    if kind is bytes:
        return f'{_room_for(len(value))}s', value, _BYTES
    try:
        fmt, code = _fixed_layouts[kind]
    except KeyError:
        raise _UnstorableItem(
            f'ShareableList cannot store items of type {kind.__name__!r} '
            f'(only int, float, bool, str, bytes and None)') from None
    return fmt, value, code


def _restore(raw, code):
    if code == _TEXT:
        return raw.rstrip(b'\x00').decode(_ENCODING)
    if code == _BYTES:
        return raw.rstrip(b'\x00')
    if code == _NONE:
        return None
    return raw


def _slot_length(fmt):
    return int(fmt[:-1]) if fmt.endswith('s') else _WORD


class ShareableList:
    """A list of int, float, bool, str, bytes and None values in a shared
    memory block.  Its length is fixed; items may be replaced, str and bytes
    items only by values that fit the room allocated at creation.

    ShareableList(sequence) makes a new block (named `name` if given);
    ShareableList(name=name) attaches to an existing list."""

    def __init__(self, sequence=None, *, name=None):
        if sequence is None and name is not None:
            self.shm = SharedMemory(name)
            self._read_layout()
        else:
            self._build(() if sequence is None else sequence, name)

    # -- creation and attachment --

    def _build(self, sequence, name):
        described = [_describe(item) for item in sequence]
        count = len(described)
        ends = [0]
        for fmt, _, _ in described:
            ends.append(ends[-1] + _slot_length(fmt))
        self._list_len = count
        self._allocated_offsets = ends
        total = (count + 2) * _WORD + ends[-1] + count * (_WORD + 1)
        self.shm = SharedMemory(name, create=True, size=total)
        layout = (f'q{count + 1}q' + ''.join(f for f, _, _ in described)
                  + f'{count * "8s"}{count}b')
        fields = [count, *ends]
        fields += [payload for _, payload, _ in described]
        fields += [fmt.encode(_ENCODING) for fmt, _, _ in described]
        fields += [code for _, _, code in described]
        struct.pack_into(layout, self.shm.buf, 0, *fields)
        self._note_regions()

    def _read_layout(self):
        buf = self.shm.buf
        count = struct.unpack_from('q', buf, 0)[0]
        self._list_len = count
        self._allocated_offsets = list(
            struct.unpack_from(f'{count + 1}q', buf, _WORD))
        self._note_regions()

    def _note_regions(self):
        # Where the data, formats and codes start never changes: compute
        # it once for the item accessors.
        data = (self._list_len + 2) * _WORD
        formats = data + self._allocated_offsets[-1]
        self._regions = (data, formats, formats + self._list_len * _WORD)

    def _index(self, position, message):
        position = operator.index(position)
        count = self._list_len
        if -count <= position < 0:
            position += count
        if not 0 <= position < count:
            raise IndexError(message)
        return position

    def _get_packing_format(self, position):
        "The struct format of the item at `position`."
        i = self._index(position, "Requested position out of range.")
        return self._fmt_at(self.shm.buf, self._regions[1], i)

    # -- the list interface --

    def _fmt_at(self, buf, formats, i):
        return _FORMAT_FIELD.unpack_from(buf, formats + i * _WORD)[0] \
            .rstrip(b'\x00').decode(_ENCODING)

    def __getitem__(self, position):
        i = self._index(position, "index out of range")
        buf = self.shm.buf
        data, formats, codes = self._regions
        raw = struct.unpack_from(self._fmt_at(buf, formats, i), buf,
                                 data + self._allocated_offsets[i])[0]
        return _restore(raw, buf[codes + i])

    def __setitem__(self, position, value):
        i = self._index(position, "assignment index out of range")
        fmt, payload, code = _describe(value)
        buf = self.shm.buf
        data, formats, codes = self._regions
        start = self._allocated_offsets[i]
        if fmt[-1] == 's':
            room = self._allocated_offsets[i + 1] - start
            if len(payload) > room:
                raise ValueError("bytes/str item exceeds available storage")
            current = self._fmt_at(buf, formats, i)
            fmt = current if current[-1:] == 's' else f'{room}s'
        _FORMAT_FIELD.pack_into(buf, formats + i * _WORD,
                                fmt.encode(_ENCODING))
        buf[codes + i] = code
        struct.pack_into(fmt, buf, data + start, payload)

    def __len__(self):
        return struct.unpack_from('q', self.shm.buf, 0)[0]

    def __iter__(self):
        for i in range(self._list_len):
            yield self[i]

    def __reduce__(self):
        return _attach_list, (type(self), self.shm.name)

    def __repr__(self):
        return f'{type(self).__name__}({list(self)}, name={self.shm.name!r})'

    @property
    def format(self):
        "The struct formats of all items, concatenated."
        return ''.join(self._get_packing_format(i)
                       for i in range(self._list_len))

    def count(self, value):
        "L.count(value) -> integer -- return number of occurrences of value."
        return sum(1 for item in self if item == value)

    def index(self, value):
        """L.index(value) -> integer -- return first index of value.
        Raises ValueError if the value is not present."""
        for i, item in enumerate(self):
            if item == value:
                return i
        if _INDEX_ERROR_IS_GENERIC:
            raise ValueError("ShareableList.index(x): x not in list")
        raise ValueError(f"{value!r} not in this container")

    __class_getitem__ = classmethod(types.GenericAlias)


def _attach_list(cls, name):
    return cls(name=name)
