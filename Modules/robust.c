/*
 * robust.c -- recovering a lock from a holder that died (robust.h).
 */
#include "cmp.h"
#include "robust.h"

int
cmp_owner_claim_if_gone(cmp_owner_rec *r, uint64_t me, int *claimed,
                        uint64_t *dead)
{
    *claimed = 0;
    uint64_t holder = cmp_owner_load(r);
    if (holder == 0 || holder == me) {
        return 0;
    }
    int gone = 0;
    int err = cmp_proc_tag_gone(holder, &gone);
    if (err || !gone) {
        return err;
    }
    /* Gone for good: whoever swaps first takes its place. */
    if (cmp_owner_swap(r, holder, me)) {
        *claimed = 1;
        *dead = holder;
    }
    return 0;
}

int
cmp_owner_give(cmp_owner_rec *r, cmp_sem_t wake)
{
    cmp_atomic_store64(&r->owner, 0);
    cmp_atomic_fence();
    if (cmp_atomic_load32(&r->waiters) == 0 ||
        cmp_atomic_xchg32(&r->woken, 1) != 0) {
        return 0;
    }
    int rc = cmp_sem_post(wake, 1);
    return rc == CMP_OVERFLOW ? 0 : rc;
}
