"""Shared memory blocks for sharedctypes.

The allocator is native (_cmultiprocessing.Heap): arenas of shared memory
that forked children inherit, cut into aligned blocks, merged again as they
are freed.  A BufferWrapper owns one block; the block goes back to the heap
when the last reference to it (the wrapper, or a ctypes object or
memoryview made from it) disappears.  Spawned children receive the arena's
descriptor and map the same bytes again.
"""

import sys

import _cmultiprocessing

from .context import reduction

__all__ = ['BufferWrapper']

Arena = _cmultiprocessing.Arena
Heap = _cmultiprocessing.Heap


def _arena_from_parent(size, duplicate):
    return Arena(size, duplicate.detach())


if sys.platform == 'win32':
    _FILE_MAP_ALL_ACCESS = 0xF001F

    def _arena_to_child(arena):
        # The child pulls a duplicate of the mapping's handle.
        return _arena_from_parent, (
            arena.size, reduction.DupHandle(arena.fd, _FILE_MAP_ALL_ACCESS))
else:
    def _arena_to_child(arena):
        # The descriptor travels with the spawning machinery (passed fd,
        # or the resource sharer where fds cannot be passed directly).
        return _arena_from_parent, (arena.size, reduction.DupFd(arena.fd))

reduction.register(Arena, _arena_to_child)


def _wrapper_in_child(arena, start, size):
    wrapper = BufferWrapper.__new__(BufferWrapper)
    wrapper._block = arena.view(start, size)
    return wrapper


class BufferWrapper(object):
    """`size` zeroed bytes of shared memory from the class-wide heap."""

    _heap = Heap()

    def __init__(self, size):
        self._block = BufferWrapper._heap.take(size)

    def create_memoryview(self):
        "A writable memoryview of exactly the requested bytes."
        return memoryview(self._block)

    @property
    def _state(self):
        block = self._block
        return block.block, block.size

    def __reduce__(self):
        # The arena inside pickles only through ForkingPickler (its
        # descriptor is duplicated for the receiver), as in the stdlib.
        block = self._block
        return _wrapper_in_child, (block.arena, block.start, block.size)

    def __repr__(self):
        block = self._block
        return (f'<{type(self).__name__} {block.size} bytes at '
                f'{block.start} of {block.arena!r}>')
