// Thread pool with a generation counter: run() publishes the job and bumps
// the generation; workers spin on it for a short while (decode issues loops
// every few microseconds, so a sleeping worker would cost a futex wake-up per
// loop), then block on a condition variable so an idle pool burns no CPU.
//
// Indices 1..n-1 are claimed, not assigned: whoever is running takes the
// next unclaimed ith (the caller runs 0, then claims too), and run() returns
// once every index is done and every worker that joined this job has left it. A worker that has not woken up by the
// time the caller has run out of indices never joins (an entry gate closes),
// so on a machine shared with other processes a descheduled worker costs
// the loop its share of parallelism, not a wait for the scheduler.
#include "backend/cpu/threadpool.h"

#include "common.h"

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

// The entry gate: generation (low 32 bits) << 32 | closed | workers that joined.
constexpr uint64_t kClosed = uint64_t(1) << 31;
constexpr uint64_t kCountMask = kClosed - 1;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

}  // namespace

struct ThreadPool::Impl {
    // Written by run() before the generation is published (seq_cst store) and
    // read by workers after they observe it.
    const std::function<void(int, int)> *job = nullptr;
    int n_threads = 1;

    // Separate cache lines: workers poll `generation` while others hammer `next`.
    alignas(64) std::atomic<uint64_t> generation{0};
    alignas(64) std::atomic<uint64_t> entry{0};
    alignas(64) std::atomic<int> next{0};  // next unclaimed ith
    alignas(64) std::atomic<int> done{0};  // joined workers that have left
    alignas(64) std::atomic<int> sleepers{0};
    std::atomic<bool> stop{false};

    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::thread> workers;

    void claim_all() {
        for (int i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n_threads;) (*job)(i, n_threads);
    }

    void worker_main() {
        uint64_t seen = 0;
        for (;;) {
            const uint64_t g = wait_for_job(seen);
            if (stop.load(std::memory_order_acquire)) return;
            seen = g;
            // Join unless the caller has already closed this job (or moved on).
            uint64_t e = entry.load(std::memory_order_acquire);
            bool joined = false;
            while ((e >> 32) == (g & 0xffffffffu) && !(e & kClosed)) {
                if (entry.compare_exchange_weak(e, e + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
                    joined = true;
                    break;
                }
            }
            if (!joined) continue;
            claim_all();
            // Release: the job's writes are visible to run()'s acquire of done.
            done.fetch_add(1, std::memory_order_release);
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
        // sleepers is incremented before the predicate is checked (both seq_cst)
        // and run() publishes the generation before reading sleepers: either
        // run() sees this sleeper and notifies under the mutex, or the
        // predicate sees the new generation.
        sleepers.fetch_add(1);
        cv.wait(lk, [&] { return generation.load() != seen || stop.load(); });
        sleepers.fetch_sub(1);
        return generation.load(std::memory_order_acquire);
    }
};

ThreadPool::ThreadPool(int n_threads) : impl_(new Impl), n_threads_(n_threads < 1 ? 1 : n_threads) {
    impl_->n_threads = n_threads_;
    impl_->workers.reserve(size_t(n_threads_ - 1));
    try {
        for (int i = 1; i < n_threads_; i++) impl_->workers.emplace_back([this] { impl_->worker_main(); });
    } catch (const std::system_error &e) {
        // Out of threads: stop the ones already started (a joinable std::thread
        // destroyed unjoined would terminate the process) and report it.
        shutdown();
        fail(KVFIT_E_NOMEM, "cannot start %d CPU worker threads: %s", n_threads_ - 1, e.what());
    }
}

void ThreadPool::shutdown() {
    {
        std::lock_guard<std::mutex> lk(impl_->mu);
        impl_->stop.store(true);
    }
    impl_->cv.notify_all();
    for (auto &t : impl_->workers) t.join();
    delete impl_;
    impl_ = nullptr;
}

ThreadPool::~ThreadPool() { shutdown(); }

void ThreadPool::run(const std::function<void(int ith, int nth)> &fn) {
    if (n_threads_ == 1) {
        fn(0, 1);
        return;
    }
    Impl &p = *impl_;
    // No worker is inside a job here (the previous run waited for all that
    // joined), and late ones check the gate's generation before touching state.
    p.job = &fn;
    p.next.store(1, std::memory_order_relaxed);  // ith 0 is always the caller's
    p.done.store(0, std::memory_order_relaxed);
    const uint64_t g = p.generation.load(std::memory_order_relaxed) + 1;
    p.entry.store((g & 0xffffffffu) << 32, std::memory_order_relaxed);
    p.generation.store(g);  // seq_cst: publishes the above, ordered before the sleepers load
    if (p.sleepers.load() > 0) {
        // Taking the mutex ensures a worker between its predicate check and
        // its wait cannot miss the notification.
        { std::lock_guard<std::mutex> lk(p.mu); }
        p.cv.notify_all();
    }

    fn(0, n_threads_);
    p.claim_all();

    const int joined = int(p.entry.fetch_or(kClosed, std::memory_order_acq_rel) & kCountMask);
    if (p.done.load(std::memory_order_acquire) == joined) return;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; p.done.load(std::memory_order_acquire) != joined; i++) {
        cpu_relax();
        // A joined worker that lost its core needs the core back more than we
        // need to notice its end a few microseconds sooner.
        if ((i & 63) == 63 && std::chrono::steady_clock::now() - start > kJoinSpin) std::this_thread::yield();
    }
}

}  // namespace kvfit
