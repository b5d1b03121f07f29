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
#if defined(__linux__)
#include <sched.h>
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
    // The cores this process may run on (taskset, cpusets), else all of them.
    unsigned n = 0;
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = unsigned(CPU_COUNT(&set));
#endif
    if (n == 0) n = std::thread::hardware_concurrency();
    return int(std::clamp(n, 1u, 16u));
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
    // Workers not asleep (spinning for a job or in one), and how many the
    // live pools could use at once: the sum of their nth - 1, at most the
    // active workers. Surplus workers sleep instead of spinning, and run()
    // wakes a sleeper only while fewer are awake than that.
    alignas(64) std::atomic<int> awake{0};
    std::atomic<int> wanted{0};
    std::atomic<int> active{0};  // workers allowed to join jobs (ids below it)
    std::atomic<bool> stop{false};

    std::mutex mu;  // guards workers, free_slots, demand; the condition variables'
    std::condition_variable cv;       // sleepers waiting for a job
    std::condition_variable park_cv;  // workers beyond the limit
    std::vector<std::thread> workers;
    std::vector<int> free_slots;
    int demand = 0;  // sum of nth - 1 over the pools holding a slot

    void update_wanted() { wanted.store(std::min(demand, active.load())); }

    ~Shared() {
        {
            std::lock_guard<std::mutex> lk(mu);
            stop.store(true);
        }
        cv.notify_all();
        park_cv.notify_all();
        for (auto &t : workers) t.join();
    }

    // Starts workers up to n - 1 in all (under mu). Throws KVFIT_E_NOMEM.
    void resize(int limit) {
        const int want = std::max(0, limit - 1);
        active.store(want);
        update_wanted();
        try {
            while (int(workers.size()) < want) {
                const int id = int(workers.size());
                workers.emplace_back([this, id] { worker_main(id); });
            }
        } catch (const std::system_error &e) {
            active.store(int(workers.size()));
            update_wanted();
            fail(KVFIT_E_NOMEM, "cannot start %d CPU worker threads: %s", want, e.what());
        }
    }

    int take_slot(int nth) {
        std::lock_guard<std::mutex> lk(mu);
        int s = -1;
        if (!free_slots.empty()) {
            s = free_slots.back();
            free_slots.pop_back();
        } else if (n_slots.load() < kMaxSlots) {
            s = n_slots.load();
            n_slots.store(s + 1);
        }
        if (s >= 0) {
            demand += nth - 1;
            update_wanted();
        }
        return s;
    }
    void give_slot(int s, int nth) {
        std::lock_guard<std::mutex> lk(mu);
        free_slots.push_back(s);
        demand -= nth - 1;
        update_wanted();
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
        generation.fetch_add(1);  // seq_cst: ordered before the sleepers and awake loads
        if (sleepers.load() > 0 && awake.load() < wanted.load()) {
            // Taking the mutex ensures a worker between its predicate check
            // and its wait cannot miss the notification.
            { std::lock_guard<std::mutex> lk(mu); }
            cv.notify_one();
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
        awake.fetch_add(1);
        for (;;) {
            if (id >= active.load(std::memory_order_relaxed)) {
                std::unique_lock<std::mutex> lk(mu);
                awake.fetch_sub(1);
                park_cv.wait(lk, [&] { return id < active.load() || stop.load(); });
                awake.fetch_add(1);
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
        // More workers awake than the pools could use: this one sleeps at once.
        const bool spin = awake.load(std::memory_order_relaxed) <= wanted.load(std::memory_order_relaxed);
        for (int i = 0; spin; i++) {
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
        // predicate sees the new generation. The same holds for awake: open()
        // skips the notification only if it reads awake >= wanted after its
        // generation bump, and this worker no longer counts in awake when it
        // checks the predicate.
        sleepers.fetch_add(1);
        awake.fetch_sub(1);
        cv.wait(lk, [&] { return generation.load() != seen || stop.load(); });
        awake.fetch_add(1);
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
        p->park_cv.notify_all();  // parked workers recheck their id against the new limit
        p->cv.notify_all();
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
    slot_ = shared_->take_slot(n_threads_);
}

ThreadPool::~ThreadPool() {
    if (shared_ && slot_ >= 0) shared_->give_slot(slot_, n_threads_);
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
