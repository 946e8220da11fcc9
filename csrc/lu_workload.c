/*
 * Guest workloads, the dom0 software that serves them, and the pCPU loop
 * that runs both.  Everything a guest computes is a pure function of its
 * seed and step count, so a verifier can check memory and registers without
 * having watched them.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "hw_nic.h"
#include "lu_core.h"

#define PAGE_SIZE 4096u
#define SLOTS_PER_PAGE (PAGE_SIZE / 8)
#define GUEST_RSP 0x7fff0000ull
#define GUEST_RIP 0x400000ull
#define SHINFO_PENDING 2048u     /* evtchn_pending[] in struct shared_info */
#define SHINFO_MASK 2560u        /* evtchn_mask[] */
#define FIFO_PENDING (1u << 31)
#define FIFO_MASKED (1u << 30)
#define IDLE_SLEEP_NS 20000        /* the first sleep when nothing can run; doubled up to idle_max_ns */
#define RATE_BURST_NS 100000000ull  /* a vCPU behind its rate catches up at most this much */

static inline uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t lu_workload_value(uint64_t seed, uint32_t vcpu_id, uint64_t k)
{
    return mix64(seed ^ mix64(((uint64_t)vcpu_id << 48) ^ k));
}

uint64_t lu_dm_read(uint64_t addr)
{
    return mix64(addr * 3 + 1);
}

uint64_t lu_backend_answer(uint64_t value)
{
    return mix64(~value);
}

uint64_t lu_ring_request(uint64_t seed, uint32_t vcpu_id, uint64_t seq)
{
    return mix64(seed + 0x5bd1e995ull * (seq + 1) + vcpu_id);
}

static inline uint64_t io_addr(uint64_t seq)
{
    return LU_IO_MMIO_BASE + (seq % 65536) * 8;
}

uint64_t lu_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- registers and memory in closed form ---- */

void lu_workload_regs(uint64_t seed, uint32_t vcpu_id, uint32_t ws_pages, uint32_t io_every,
                      uint32_t ring_every, uint64_t steps, struct lu_regs *r)
{
    uint64_t slots = (uint64_t)ws_pages * SLOTS_PER_PAGE;

    memset(r, 0, sizeof(*r));
    r->rsp = GUEST_RSP - (uint64_t)vcpu_id * 0x10000;
    r->rsi = seed ^ vcpu_id;
    r->rdi = ws_pages;
    r->rflags = 0x202;
    r->rip = GUEST_RIP + (steps % 1024) * 16;
    r->rbx = steps;
    if ( steps )
    {
        r->rax = lu_workload_value(seed, vcpu_id, steps - 1);
        r->rcx = slots ? (steps - 1) % slots : 0;
    }
    if ( steps > 1 )
        r->r8 = lu_workload_value(seed, vcpu_id, steps - 2);
    if ( ring_every )
        r->r13 = steps / ring_every;
    if ( io_every && steps >= io_every )
    {
        r->r12 = steps / io_every;
        r->rdx = lu_dm_read(io_addr(steps / io_every - 1));
    }
}

static inline uint64_t *slot_ptr(uint8_t *ram, const uint64_t *mfns, uint32_t ws_pages,
                                 uint64_t slot)
{
    uint64_t page = slot % ws_pages, word = slot / ws_pages;

    return (uint64_t *)(ram + mfns[page] * PAGE_SIZE) + word;
}

uint64_t lu_workload_check(const uint8_t *ram, const uint64_t *ws_mfns, uint32_t ws_pages,
                           uint64_t seed, uint32_t vcpu_id, uint64_t steps,
                           uint64_t *slot, uint64_t *got, uint64_t *want)
{
    uint64_t slots = (uint64_t)ws_pages * SLOTS_PER_PAGE, s, bad = 0;

    for ( s = 0; s < slots; s++ )
    {
        /* The last step that wrote slot s, if any: the largest k < steps
         * with k = s (mod slots). */
        uint64_t expect = 0, value;

        if ( steps > s )
            expect = lu_workload_value(seed, vcpu_id, s + slots * ((steps - 1 - s) / slots));
        value = *slot_ptr((uint8_t *)ram, ws_mfns, ws_pages, s);
        if ( value != expect )
        {
            if ( !bad )
            {
                *slot = s;
                *got = value;
                *want = expect;
            }
            bad++;
        }
    }
    return bad;
}

/* ---- event channels: bits in guest memory ---- */

static inline uint64_t *bitmap_word(const struct lu_port *p, uint32_t base)
{
    return (uint64_t *)(p->page + base) + p->port / 64;
}

static inline uint32_t *fifo_word(const struct lu_port *p)
{
    return (uint32_t *)p->page + p->port;
}

void lu_port_set_pending(const struct lu_port *p)
{
    if ( !p->page )
        return;
    if ( p->abi == LU_EVTCHN_FIFO )
    {
        __atomic_or_fetch(fifo_word(p), FIFO_PENDING, __ATOMIC_SEQ_CST);
        return;
    }
    __atomic_or_fetch(bitmap_word(p, SHINFO_PENDING), 1ull << (p->port % 64), __ATOMIC_SEQ_CST);
    if ( !(__atomic_load_n(bitmap_word(p, SHINFO_MASK), __ATOMIC_SEQ_CST) & (1ull << (p->port % 64))) )
    {
        /* vcpu_info[0]: evtchn_pending_sel, then evtchn_upcall_pending. */
        __atomic_or_fetch((uint64_t *)(p->page + 8), 1ull << (p->port / 64), __ATOMIC_SEQ_CST);
        __atomic_store_n(p->page, 1, __ATOMIC_SEQ_CST);
    }
}

int lu_port_pending(const struct lu_port *p)
{
    if ( !p->page )
        return 0;
    if ( p->abi == LU_EVTCHN_FIFO )
        return !!(__atomic_load_n(fifo_word(p), __ATOMIC_SEQ_CST) & FIFO_PENDING);
    return !!(__atomic_load_n(bitmap_word(p, SHINFO_PENDING), __ATOMIC_SEQ_CST) & (1ull << (p->port % 64)));
}

int lu_port_masked(const struct lu_port *p)
{
    if ( !p->page )
        return 0;
    if ( p->abi == LU_EVTCHN_FIFO )
        return !!(__atomic_load_n(fifo_word(p), __ATOMIC_SEQ_CST) & FIFO_MASKED);
    return !!(__atomic_load_n(bitmap_word(p, SHINFO_MASK), __ATOMIC_SEQ_CST) & (1ull << (p->port % 64)));
}

void lu_port_clear_pending(const struct lu_port *p)
{
    if ( !p->page )
        return;
    if ( p->abi == LU_EVTCHN_FIFO )
        __atomic_and_fetch(fifo_word(p), ~FIFO_PENDING, __ATOMIC_SEQ_CST);
    else
        __atomic_and_fetch(bitmap_word(p, SHINFO_PENDING), ~(1ull << (p->port % 64)), __ATOMIC_SEQ_CST);
}

/* ---- ioreq state: the low nibble of byte 30 ---- */

static inline uint8_t ioreq_state(struct lu_ioreq *r)
{
    return __atomic_load_n((uint8_t *)r + 30, __ATOMIC_ACQUIRE) & 0x0f;
}

static inline void ioreq_set_state(struct lu_ioreq *r, uint8_t state)
{
    uint8_t *b = (uint8_t *)r + 30;

    __atomic_store_n(b, (uint8_t)((*b & 0xf0) | state), __ATOMIC_RELEASE);
}

/* ---- one guest step ---- */

static void finish_step(struct lu_vcpu *v, uint64_t k)
{
    uint64_t value = lu_workload_value(v->seed, v->vcpu_id, k);
    uint64_t slots = (uint64_t)v->ws_pages * SLOTS_PER_PAGE;

    if ( slots )
        *slot_ptr(v->ram, v->ws_mfns, v->ws_pages, k % slots) = value;
    v->regs.r8 = v->regs.rax;
    v->regs.rax = value;
    v->regs.rbx = k + 1;
    v->regs.rcx = slots ? k % slots : 0;
    v->regs.rip = GUEST_RIP + ((k + 1) % 1024) * 16;
    v->steps = k + 1;
}

/* HVM: at an I/O step, issue the read or collect its answer.  1: blocked. */
static int hvm_io(struct lu_vcpu *v, uint64_t k)
{
    struct lu_ioreq *r = v->ioreq;

    if ( v->runstate != LU_RUN_BLOCKED_IO )
    {
        r->addr = io_addr((k + 1) / v->io_every - 1);
        r->data = 0;
        r->count = 1;
        r->size = 8;
        r->vp_eport = v->io_port.port;
        r->data_is_ptr = 0;
        r->dir = LU_IOREQ_READ;
        r->df = 0;
        r->type = LU_IOREQ_TYPE_COPY;
        ioreq_set_state(r, LU_IOREQ_READY);
        v->runstate = LU_RUN_BLOCKED_IO;
        lu_port_set_pending(&v->dm_port);
        return 1;
    }
    /* Woken only by the event, as a real vCPU would be. */
    if ( !lu_port_pending(&v->io_port) || ioreq_state(r) != LU_IORESP_READY )
        return 1;
    lu_port_clear_pending(&v->io_port);
    v->regs.rdx = r->data;
    v->regs.r12 = (k + 1) / v->io_every;
    ioreq_set_state(r, LU_IOREQ_NONE);
    v->runstate = LU_RUN_RUNNABLE;
    return 0;
}

/* PV frontend: take answers, then queue a request.  1: ring full. */
static int pv_ring(struct lu_vcpu *v, uint64_t k)
{
    struct lu_sring *s = v->ring;
    struct lu_guest_info *info = v->info;
    uint64_t seq = (k + 1) / v->ring_every - 1, idx;

    if ( lu_port_pending(&v->fe_port) )
    {
        uint32_t prod;

        lu_port_clear_pending(&v->fe_port);
        prod = __atomic_load_n(&s->rsp_prod, __ATOMIC_ACQUIRE);
        for ( ; (uint32_t)info->rsp_cons != prod; info->rsp_cons++ )
        {
            uint64_t i = info->rsp_cons % LU_RING_SIZE;
            uint64_t id = s->ring[2 * i], answer = s->ring[2 * i + 1];

            if ( id != info->rsp_cons ||
                 answer != lu_backend_answer(lu_ring_request(v->seed, v->vcpu_id, id)) )
                info->rsp_errors++;
        }
    }
    if ( (uint32_t)(s->req_prod - (uint32_t)info->rsp_cons) >= LU_RING_SIZE )
    {
        v->runstate = LU_RUN_BLOCKED_RING;
        return 1;
    }
    idx = seq % LU_RING_SIZE;
    s->ring[2 * idx] = seq;
    s->ring[2 * idx + 1] = lu_ring_request(v->seed, v->vcpu_id, seq);
    __atomic_store_n(&s->req_prod, (uint32_t)(seq + 1), __ATOMIC_RELEASE);
    lu_port_set_pending(&v->be_port);
    v->regs.r13 = seq + 1;
    v->runstate = LU_RUN_RUNNABLE;
    return 0;
}

/* ---- the guest's NIC driver (hw_nic.h) ---- */

_Static_assert(sizeof(((struct lu_nic *)0)->page) == LU_NIC_PAGES * sizeof(uint8_t *), "NIC pages");

static void nic_setup(struct lu_nic *n, struct lu_nic_counts *counts, struct lu_nic_indices *ix)
{
    struct lu_nic_desc *rx = (struct lu_nic_desc *)(n->page[0] + LU_NIC_RX_RING);
    struct lu_nic_desc *tx = (struct lu_nic_desc *)(n->page[0] + LU_NIC_TX_RING);
    unsigned int i;

    for ( i = 0; i < LU_NIC_RING; i++ )
    {
        rx[i] = (struct lu_nic_desc){ n->iova + 4096 + i * LU_NIC_PACKET, LU_NIC_PACKET, 0 };
        tx[i] = (struct lu_nic_desc){ n->iova + 2 * 4096 + i * LU_NIC_PACKET, LU_NIC_PACKET, 0 };
    }
    counts->magic = LU_NIC_MAGIC;
    __atomic_store_n(&ix->rx_posted, counts->rx_taken + LU_NIC_RING, __ATOMIC_RELEASE);
}

/* One filled buffer: intact, and the number due after the drops the
 * device counted; the buffer is then free for the device again. */
static void nic_take(struct lu_nic *n, struct lu_nic_counts *counts, unsigned int i)
{
    const struct lu_nic_packet *p = (const struct lu_nic_packet *)(n->page[1] + i * LU_NIC_PACKET);
    struct lu_nic_desc *desc = (struct lu_nic_desc *)(n->page[0] + LU_NIC_RX_RING) + i;

    if ( lu_nic_csum(p) != p->csum )
    {
        /* Nothing of a corrupted packet is to be trusted, its numbers
         * least: it took a number, and the next intact packet says which. */
        if ( !counts->rx_bad && !counts->rx_out_of_order )
        {
            counts->first_bad_seq = p->seq;
            counts->first_bad_due = counts->last_seq + 1 + counts->bad_pending;
        }
        counts->rx_bad++;
        counts->bad_pending++;
    }
    else
    {
        uint64_t due = counts->last_seq + 1 + counts->bad_pending + (p->drops - counts->last_drops);

        if ( p->seq == due )
        {
            counts->rx_dropped_seen += p->drops - counts->last_drops;
            counts->rx_ok++;
        }
        else
        {
            if ( !counts->rx_bad && !counts->rx_out_of_order )
            {
                counts->first_bad_seq = p->seq;
                counts->first_bad_due = due;
            }
            counts->rx_out_of_order++;
        }
        counts->last_seq = p->seq;         /* counted from here on */
        counts->last_drops = p->drops;
        counts->bad_pending = 0;
    }
    desc->flags = 0;
}

/* An answer, unless the TX ring is full (then none: not a loss). */
static void nic_send(struct lu_nic *n, struct lu_nic_indices *ix)
{
    uint32_t queued = ix->tx_queued;

    if ( queued - __atomic_load_n(&ix->tx_sent, __ATOMIC_ACQUIRE) >= LU_NIC_RING )
        return;
    lu_nic_make((struct lu_nic_packet *)(n->page[2] + (queued % LU_NIC_RING) * LU_NIC_PACKET),
                queued + 1, 0, 0);
    ((struct lu_nic_desc *)(n->page[0] + LU_NIC_TX_RING))[queued % LU_NIC_RING].flags = 0;
    __atomic_store_n(&ix->tx_queued, queued + 1, __ATOMIC_RELEASE);
}

void lu_nic_drive(struct lu_nic *n)
{
    uint64_t *status = (uint64_t *)n->page[0], *record = (uint64_t *)(n->page[0] + LU_NIC_IRQ_RECORD);
    struct lu_nic_indices *ix = (struct lu_nic_indices *)(n->page[0] + LU_NIC_INDICES);
    struct lu_nic_counts *counts = (struct lu_nic_counts *)(n->page[0] + LU_NIC_COUNTS);
    uint32_t filled;
    unsigned int w;

    if ( counts->magic != LU_NIC_MAGIC )
        nic_setup(n, counts, ix);
    if ( !(__atomic_load_n(&n->pi_desc[4], __ATOMIC_ACQUIRE) & 1) )
        return;
    __atomic_and_fetch(&n->pi_desc[4], ~1ull, __ATOMIC_ACQ_REL);
    for ( w = 0; w < 4; w++ )
        __atomic_exchange_n(&n->pi_desc[w], 0, __ATOMIC_ACQ_REL);
    record[1] = __atomic_load_n(&status[0], __ATOMIC_ACQUIRE);
    __atomic_store_n(&record[0], record[0] + 1, __ATOMIC_RELEASE);
    filled = __atomic_load_n(&ix->rx_filled, __ATOMIC_ACQUIRE);
    for ( ; counts->rx_taken != filled; counts->rx_taken++ )
    {
        nic_take(n, counts, counts->rx_taken % LU_NIC_RING);
        nic_send(n, ix);
    }
    __atomic_store_n(&ix->rx_posted, counts->rx_taken + LU_NIC_RING, __ATOMIC_RELEASE);
    __atomic_store_n(n->dev_ack, 0, __ATOMIC_RELEASE);
}

static int vcpu_step(struct lu_vcpu *v)
{
    uint64_t k = v->steps;
    uint32_t i;

    for ( i = 0; i < v->nr_nics; i++ )
        lu_nic_drive(&v->nics[i]);
    if ( v->io_every && (k + 1) % v->io_every == 0 && hvm_io(v, k) )
        return 1;
    if ( v->ring_every && (k + 1) % v->ring_every == 0 && pv_ring(v, k) )
        return 1;
    finish_step(v, k);
    return 0;
}

/* ---- dom0 software ---- */

static void dm_service(struct lu_dm_client *c)
{
    if ( !lu_port_pending(&c->dm_port) )
        return;
    lu_port_clear_pending(&c->dm_port);
    if ( ioreq_state(c->ioreq) != LU_IOREQ_READY )
        return;
    ioreq_set_state(c->ioreq, LU_IOREQ_INPROCESS);
    c->ioreq->data = lu_dm_read(c->ioreq->addr);
    ioreq_set_state(c->ioreq, LU_IORESP_READY);
    lu_port_set_pending(&c->io_port);
}

static void backend_service(struct lu_backend *b)
{
    uint32_t prod, cons;

    if ( !b->connected || !lu_port_pending(&b->be_port) )
        return;
    lu_port_clear_pending(&b->be_port);
    prod = __atomic_load_n(&b->ring->req_prod, __ATOMIC_ACQUIRE);
    for ( cons = (uint32_t)*b->req_cons; cons != prod; cons++ )
    {
        uint64_t i = cons % LU_RING_SIZE;

        b->ring->ring[2 * i + 1] = lu_backend_answer(b->ring->ring[2 * i + 1]);
    }
    *b->req_cons = cons;
    __atomic_store_n(&b->ring->rsp_prod, cons, __ATOMIC_RELEASE);
    lu_port_set_pending(&b->fe_port);
}

static void dom0_software(struct lu_sched *s)
{
    uint32_t i;

    for ( i = 0; i < s->nr_dm; i++ )
        dm_service(&s->dm[i]);
    for ( i = 0; i < s->nr_be; i++ )
        backend_service(&s->be[i]);
}

/* ---- the pCPU loop ---- */

/* Steps a rate-limited vCPU may run now (UINT32_MAX: no limit).  Its
 * budget grows at `rate` steps a second; one that fell far behind (paused,
 * or starved) catches up one RATE_BURST_NS worth, not all it missed. */
uint32_t lu_rate_allows(struct lu_vcpu *v, uint64_t now)
{
    uint64_t due, burst;

    if ( !v->rate )
        return UINT32_MAX;
    if ( !v->budget_ns || now < v->budget_ns )
    {
        v->budget_ns = now;
        v->budget_steps = v->steps;
    }
    due = v->budget_steps + (uint64_t)((unsigned __int128)v->rate * (now - v->budget_ns) / 1000000000u);
    burst = (uint64_t)((unsigned __int128)v->rate * RATE_BURST_NS / 1000000000u);
    if ( due > v->steps + burst )
    {
        v->budget_ns = now;
        v->budget_steps = due = v->steps + burst;
    }
    if ( due <= v->steps )
        return 0;
    return due - v->steps > UINT32_MAX ? UINT32_MAX : (uint32_t)(due - v->steps);
}

void lu_sched_run(struct lu_sched *s, uint32_t pcpu)
{
    uint32_t fruitless = 0;
    uint64_t idle_ns = IDLE_SLEEP_NS;
    (void)pcpu;

    while ( !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE) )
    {
        uint32_t n = s->nr_vcpus, i, j, expected = 0;
        struct lu_vcpu *v;
        int progressed = 0;

        if ( !n )
            goto idle;
        i = __atomic_fetch_add(&s->cursor, 1, __ATOMIC_RELAXED) % n;
        v = s->vcpus[i];
        if ( !__atomic_compare_exchange_n(&v->on_cpu, &expected, 1, 0,
                                          __ATOMIC_ACQUIRE, __ATOMIC_RELAXED) )
            continue;
        /* A vCPU with an I/O request in flight is not at a restartable
         * boundary: it keeps running until the device model answers. */
        if ( __atomic_load_n(&v->quiesce_req, __ATOMIC_ACQUIRE) && v->runstate != LU_RUN_BLOCKED_IO )
            __atomic_store_n(&v->pause_req, 1, __ATOMIC_RELEASE);
        if ( !__atomic_load_n(&v->pause_req, __ATOMIC_ACQUIRE) )
        {
            uint64_t before = v->steps, start = lu_now_ns();
            /* Asked to quiesce, it runs only to finish its I/O request: the
             * step that completes it ends at the boundary it pauses at, not
             * a slice later (a domain paused mid-request would run on). */
            uint32_t slice = __atomic_load_n(&v->quiesce_req, __ATOMIC_ACQUIRE) ? 1 : s->slice;
            uint32_t allowed = lu_rate_allows(v, start);

            if ( slice > allowed )
                slice = allowed;
            if ( !v->idle )
                for ( j = 0; j < slice && !vcpu_step(v); j++ )
                    ;
            if ( v->domid == 0 )
            {
                /* dom0's device model and backends are single-threaded
                 * processes: one dom0 vCPU runs them at a time. */
                uint32_t idle_sw = 0;

                if ( __atomic_compare_exchange_n(&s->dom0_running, &idle_sw, 1, 0,
                                                 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED) )
                {
                    dom0_software(s);
                    __atomic_store_n(&s->dom0_running, 0, __ATOMIC_RELEASE);
                }
            }
            if ( v->steps != before )
            {
                struct lu_guest_vcpu *clock = &v->info->vcpu[v->vcpu_id];
                uint64_t now = lu_now_ns();

                if ( clock->last_step_ns && now - clock->last_step_ns > clock->max_gap_ns )
                    clock->max_gap_ns = now - clock->last_step_ns;
                clock->last_step_ns = now;
                clock->running_ns += now - start;
                /* One that used up its rate's budget leaves the pCPU free to
                 * sleep: only work still waiting keeps it awake. */
                progressed = !v->rate || slice < allowed;
            }
        }
        __atomic_store_n(&v->on_cpu, 0, __ATOMIC_RELEASE);
        if ( progressed )
        {
            fruitless = 0;
            idle_ns = IDLE_SLEEP_NS;
            continue;
        }
        if ( ++fruitless < 2 * n )
            continue;
    idle:
        {
            /* Nothing could run: sleep, longer each time nothing can, so
             * that an idle or rate-limited host costs next to no CPU. */
            uint64_t most = __atomic_load_n(&s->idle_max_ns, __ATOMIC_RELAXED);
            struct timespec ts = { 0, (long)idle_ns };

            fruitless = 0;
            nanosleep(&ts, NULL);
            idle_ns = idle_ns * 2 > most ? (most > IDLE_SLEEP_NS ? most : IDLE_SLEEP_NS) : idle_ns * 2;
        }
    }
}
