// One set of worker threads per process, shared by every ThreadPool.
//
// Each ThreadPool owns a job slot in the shared set. run() fills its slot
// (the function, the part count), opens the slot's entry gate and bumps a
// process-wide generation counter; idle workers spin on the counter for a
// short while (decode issues loops every few microseconds, so a sleeping
// worker would cost a futex wake-up per loop), then block on a condition
// variable so an idle process burns no CPU. A worker that sees a new
// generation scans the slots, joins any job whose gate is open and has room
// (a job takes at most nth - 1 helpers), and claims parts of it.
//
// Parts 1..n-1 are claimed, not assigned: whoever is running takes the next
// unclaimed ith (the caller runs 0, then claims too), and run() returns once
// every part is done and every worker that joined has left. The caller closes
// the gate when it runs out of parts, so a worker that has not woken up in
// time never joins: on a machine shared with other processes a descheduled
// worker costs the loop its share of parallelism, not a wait for the
// scheduler. And a caller never waits for a job other than its own, so any
// number of sessions may run loops at once on different threads: each one
// finishes even if every worker is busy elsewhere.
#include "backend/cpu/threadpool.h"

#include "common.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace kvfit {

namespace {

// How long a worker waits actively for the next job before sleeping, and how
// long run() spins for workers still inside the job before yielding its core.
constexpr auto kSpinWait = std::chrono::microseconds(50);
constexpr auto kJoinSpin = std::chrono::microseconds(100);

// A slot's entry gate: seq (32 bits) << 32 | closed | helper room << 16 | helpers joined.
constexpr uint64_t kClosed = uint64_t(1) << 31;
constexpr uint64_t kCountMask = 0xffff;
constexpr int kRoomShift = 16;
constexpr uint64_t kRoomMask = 0x7fff;
// Job slots: one per ThreadPool with more than one thread; pools beyond this
// many run their loops on the calling thread alone.
constexpr int kMaxSlots = 256;
constexpr int kMaxLimit = 256;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

}  // namespace

int default_thread_count() {
    const unsigned hc = std::thread::hardware_concurrency();
    return int(std::clamp(hc, 1u, 16u));
}

struct ThreadPool::Shared {
    struct alignas(64) Job {
        // Written by the owner before it opens the gate (release) and read
        // by a worker after its join (acquire CAS on the gate); the owner
        // rewrites them only after every helper that joined has left.
        const std::function<void(int, int)> *fn = nullptr;
        int nth = 1;
        alignas(64) std::atomic<uint64_t> entry{kClosed};
        alignas(64) std::atomic<int> next{0};  // next unclaimed ith
        alignas(64) std::atomic<int> done{0};  // joined helpers that have left

        void claim_all() {
            for (int i; (i = next.fetch_add(1, std::memory_order_relaxed)) < nth;) (*fn)(i, nth);
        }
    };

    Job slots[kMaxSlots];
    alignas(64) std::atomic<int> n_slots{0};      // slots ever handed out: workers scan [0, n_slots)
    alignas(64) std::atomic<uint64_t> generation{0};
    alignas(64) std::atomic<int> sleepers{0};
    std::atomic<int> active{0};  // workers allowed to join jobs (ids below it)
    std::atomic<bool> stop{false};

    std::mutex mu;  // guards workers, free_slots; the condition variable's
    std::condition_variable cv;
    std::vector<std::thread> workers;
    std::vector<int> free_slots;

    ~Shared() {
        {
            std::lock_guard<std::mutex> lk(mu);
            stop.store(true);
        }
        cv.notify_all();
        for (auto &t : workers) t.join();
    }

    // Starts workers up to n - 1 in all (under mu). Throws KVFIT_E_NOMEM.
    void resize(int limit) {
        const int want = std::max(0, limit - 1);
        active.store(want);
        try {
            while (int(workers.size()) < want) {
                const int id = int(workers.size());
                workers.emplace_back([this, id] { worker_main(id); });
            }
        } catch (const std::system_error &e) {
            active.store(int(workers.size()));
            fail(KVFIT_E_NOMEM, "cannot start %d CPU worker threads: %s", want, e.what());
        }
    }

    int take_slot() {
        std::lock_guard<std::mutex> lk(mu);
        if (!free_slots.empty()) {
            const int s = free_slots.back();
            free_slots.pop_back();
            return s;
        }
        const int n = n_slots.load();
        if (n == kMaxSlots) return -1;
        n_slots.store(n + 1);
        return n;
    }
    void give_slot(int s) {
        std::lock_guard<std::mutex> lk(mu);
        free_slots.push_back(s);
    }

    // Publishes a job in slot s and wakes the workers.
    void open(int s, uint32_t seq, const std::function<void(int, int)> &fn, int nth) {
        Job &j = slots[s];
        j.fn = &fn;
        j.nth = nth;
        j.next.store(1, std::memory_order_relaxed);  // ith 0 is always the caller's
        j.done.store(0, std::memory_order_relaxed);
        const uint64_t room = uint64_t(std::min(nth - 1, int(kRoomMask)));
        j.entry.store(uint64_t(seq) << 32 | room << kRoomShift, std::memory_order_release);
        generation.fetch_add(1);  // seq_cst: ordered before the sleepers load
        if (sleepers.load() > 0) {
            // Taking the mutex ensures a worker between its predicate check
            // and its wait cannot miss the notification.
            { std::lock_guard<std::mutex> lk(mu); }
            cv.notify_all();
        }
    }

    // Closes slot s's gate once the caller has run out of parts and waits for
    // the helpers that joined.
    void close(int s) {
        Job &j = slots[s];
        const int joined = int(j.entry.fetch_or(kClosed, std::memory_order_acq_rel) & kCountMask);
        if (j.done.load(std::memory_order_acquire) == joined) return;
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; j.done.load(std::memory_order_acquire) != joined; i++) {
            cpu_relax();
            // A joined worker that lost its core needs the core back more than
            // we need to notice its end a few microseconds sooner.
            if ((i & 63) == 63 && std::chrono::steady_clock::now() - start > kJoinSpin) std::this_thread::yield();
        }
    }

    static bool try_join(Job &j) {
        uint64_t e = j.entry.load(std::memory_order_acquire);
        while (!(e & kClosed) && (e & kCountMask) < ((e >> kRoomShift) & kRoomMask)) {
            if (j.entry.compare_exchange_weak(e, e + 1, std::memory_order_acq_rel, std::memory_order_acquire))
                return true;
        }
        return false;
    }

    void worker_main(int id) {
        uint64_t seen = 0;
        int cursor = id;  // where the next scan starts, so workers spread over the jobs
        for (;;) {
            if (id >= active.load(std::memory_order_relaxed)) {
                std::unique_lock<std::mutex> lk(mu);
                cv.wait(lk, [&] { return id < active.load() || stop.load(); });
            }
            const uint64_t g = wait_for_job(seen);
            if (stop.load(std::memory_order_acquire)) return;
            seen = g;
            // Jobs opened after g was read bump the generation again, so the
            // next wait returns at once and nothing is missed.
            for (bool any = true; any;) {
                any = false;
                const int n = n_slots.load(std::memory_order_acquire);
                for (int k = 0; k < n; k++) {
                    Job &j = slots[(cursor + k) % n];
                    if (!try_join(j)) continue;
                    j.claim_all();
                    // Release: the job's writes are visible to close()'s acquire of done.
                    j.done.fetch_add(1, std::memory_order_release);
                    cursor = (cursor + k + 1) % n;
                    any = true;
                    break;
                }
            }
        }
    }

    // Returns the newest generation once it differs from seen (or stop is set).
    uint64_t wait_for_job(uint64_t seen) {
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0;; i++) {
            const uint64_t g = generation.load(std::memory_order_acquire);
            if (g != seen || stop.load(std::memory_order_relaxed)) return g;
            cpu_relax();
            // Reading the clock costs ~20 ns; do it rarely.
            if ((i & 63) == 63 && std::chrono::steady_clock::now() - start > kSpinWait) break;
        }
        std::unique_lock<std::mutex> lk(mu);
        // sleepers is incremented before the predicate is checked (both
        // seq_cst) and open() bumps the generation before reading sleepers:
        // either open() sees this sleeper and notifies under the mutex, or the
        // predicate sees the new generation.
        sleepers.fetch_add(1);
        cv.wait(lk, [&] { return generation.load() != seen || stop.load(); });
        sleepers.fetch_sub(1);
        return generation.load(std::memory_order_acquire);
    }
};

namespace {

// The process's shared workers exist while some ThreadPool needs them.
struct Registry {
    std::mutex mu;
    std::weak_ptr<ThreadPool::Shared> pool;
    int limit = 0;  // 0: default_thread_count()
};

Registry &registry() {
    static Registry *r = new Registry;  // never destroyed: usable until the very end of the process
    return *r;
}

int effective_limit(const Registry &r) { return r.limit > 0 ? r.limit : default_thread_count(); }

}  // namespace

int thread_limit() {
    Registry &r = registry();
    std::lock_guard<std::mutex> lk(r.mu);
    return effective_limit(r);
}

void set_thread_limit(int n) {
    if (n < 0 || n > kMaxLimit) fail(KVFIT_E_ARG, "the thread limit must be 0..%d, got %d", kMaxLimit, n);
    Registry &r = registry();
    std::lock_guard<std::mutex> lk(r.mu);
    r.limit = n;
    if (std::shared_ptr<ThreadPool::Shared> p = r.pool.lock()) {
        {
            std::lock_guard<std::mutex> plk(p->mu);
            p->resize(effective_limit(r));
        }
        p->cv.notify_all();  // parked workers recheck their id against the new limit
    }
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    if (n_threads_ == 1) return;
    {
        Registry &r = registry();
        std::lock_guard<std::mutex> lk(r.mu);
        shared_ = r.pool.lock();
        if (!shared_) {
            auto p = std::make_shared<Shared>();
            {
                std::lock_guard<std::mutex> plk(p->mu);
                p->resize(effective_limit(r));  // on failure p's destructor joins what started
            }
            r.pool = p;
            shared_ = std::move(p);
        }
    }
    slot_ = shared_->take_slot();
}

ThreadPool::~ThreadPool() {
    if (shared_ && slot_ >= 0) shared_->give_slot(slot_);
    // The last pool's reference stops and joins the workers.
}

void ThreadPool::run(const std::function<void(int ith, int nth)> &fn) {
    if (n_threads_ == 1) {
        fn(0, 1);
        return;
    }
    if (slot_ < 0 || shared_->active.load(std::memory_order_relaxed) == 0) {
        for (int i = 0; i < n_threads_; i++) fn(i, n_threads_);
        return;
    }
    shared_->open(slot_, ++seq_, fn, n_threads_);
    fn(0, n_threads_);
    shared_->slots[slot_].claim_all();
    shared_->close(slot_);
}

}  // namespace kvfit
