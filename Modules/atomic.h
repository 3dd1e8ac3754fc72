/*
 * atomic.h -- atomic access to words of shared memory, the one set of
 * them: the owner records' 64-bit words (robust.h) and the queue ring's
 * positions and futex words (ring.c).  Loads acquire and stores release
 * (64-bit), the 32-bit ones and read-modify-writes are sequentially
 * consistent (exchange, or and compare-and-swap return the old value or
 * whether it matched); cmp_atomic_fence() is a full fence, for the
 * "announce, then look" pairs of the ring's sleep protocol.  MSVC's
 * interlocked calls where there is no GCC/Clang builtin.
 */
#ifndef CMP_ATOMIC_H
#define CMP_ATOMIC_H

#include <stdint.h>

#if defined(_MSC_VER) && !defined(__clang__)
#  include <intrin.h>
static inline uint64_t
cmp_atomic_load64(const uint64_t *p)
{
    return (uint64_t)_InterlockedCompareExchange64((volatile __int64 *)p, 0,
                                                   0);
}
static inline void
cmp_atomic_store64(uint64_t *p, uint64_t v)
{
    (void)_InterlockedExchange64((volatile __int64 *)p, (__int64)v);
}
static inline int
cmp_atomic_swap64(uint64_t *p, uint64_t expected, uint64_t v)
{
    return (uint64_t)_InterlockedCompareExchange64(
               (volatile __int64 *)p, (__int64)v, (__int64)expected) ==
           expected;
}
static inline void
cmp_atomic_add64(uint64_t *p, int64_t v)
{
    (void)_InterlockedExchangeAdd64((volatile __int64 *)p, (__int64)v);
}
static inline uint32_t
cmp_atomic_load32(const uint32_t *p)
{
    return (uint32_t)_InterlockedCompareExchange((volatile long *)p, 0, 0);
}
static inline void
cmp_atomic_store32(uint32_t *p, uint32_t v)
{
    (void)_InterlockedExchange((volatile long *)p, (long)v);
}
static inline void
cmp_atomic_add32(uint32_t *p, int32_t v)
{
    (void)_InterlockedExchangeAdd((volatile long *)p, (long)v);
}
static inline uint32_t
cmp_atomic_xchg32(uint32_t *p, uint32_t v)
{
    return (uint32_t)_InterlockedExchange((volatile long *)p, (long)v);
}
static inline uint32_t
cmp_atomic_or32(uint32_t *p, uint32_t v)
{
    return (uint32_t)_InterlockedOr((volatile long *)p, (long)v);
}
static inline int
cmp_atomic_swap32(uint32_t *p, uint32_t expected, uint32_t v)
{
    return (uint32_t)_InterlockedCompareExchange((volatile long *)p, (long)v,
                                                 (long)expected) == expected;
}
static inline void
cmp_atomic_fence(void)
{
    MemoryBarrier();
}
#else
static inline uint64_t
cmp_atomic_load64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void
cmp_atomic_store64(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline int
cmp_atomic_swap64(uint64_t *p, uint64_t expected, uint64_t v)
{
    return __atomic_compare_exchange_n(p, &expected, v, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}
static inline void
cmp_atomic_add64(uint64_t *p, int64_t v)
{
    (void)__atomic_fetch_add(p, (uint64_t)v, __ATOMIC_SEQ_CST);
}
static inline uint32_t
cmp_atomic_load32(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}
static inline void
cmp_atomic_store32(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}
static inline void
cmp_atomic_add32(uint32_t *p, int32_t v)
{
    (void)__atomic_fetch_add(p, (uint32_t)v, __ATOMIC_SEQ_CST);
}
static inline uint32_t
cmp_atomic_xchg32(uint32_t *p, uint32_t v)
{
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
static inline uint32_t
cmp_atomic_or32(uint32_t *p, uint32_t v)
{
    return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST);
}
static inline int
cmp_atomic_swap32(uint32_t *p, uint32_t expected, uint32_t v)
{
    return __atomic_compare_exchange_n(p, &expected, v, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
}
static inline void
cmp_atomic_fence(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
#endif

#endif /* CMP_ATOMIC_H */
