// Data-parallel loops on worker threads that the whole process shares.
//
// Every ThreadPool (one per CPU stream, so one per session) splits its loops
// into size() parts, but it owns no threads: the parts are run by the calling
// thread and by helpers from one set of workers per process, at most
// thread_limit() - 1 of them, so that eight sessions on eight application
// threads do not start eight pools. Decode issues a few hundred small loops
// per token, so dispatch and join spin briefly before sleeping: a
// condition-variable round trip per loop would cost more than the work.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

namespace kvfit {

class ThreadPool {
public:
    // n_threads >= 1 parts per loop; the caller is thread 0. Throws
    // KVFIT_E_NOMEM if the shared workers have to be started and cannot be.
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool &operator=(const ThreadPool &) = delete;

    int size() const { return n_threads_; }
    // Calls fn(ith, nth) exactly once for each ith in [0, nth), nth = size(),
    // and returns when all calls are done; the calling thread runs ith = 0.
    // Up to min(nth, thread_limit()) threads run the calls: the caller and
    // shared workers that are free. Which thread runs which ith is not fixed
    // and the caller may run them all, so fn must not assume two ith run
    // concurrently. Not reentrant; different ThreadPools may run at once
    // from different threads, and each run() finishes even when no worker
    // is free (the caller runs whatever no worker took).
    void run(const std::function<void(int ith, int nth)> &fn);

    struct Shared;  // the process's workers and job slots (threadpool.cpp)

private:
    std::shared_ptr<Shared> shared_;  // null for n_threads == 1
    int slot_ = -1;                   // this pool's job slot in shared_; -1: none free, the caller runs all
    uint32_t seq_ = 0;                // jobs published so far
    int n_threads_;
};

// The process-wide cap on threads computing one loop: the caller plus at most
// limit - 1 shared workers (so limit - 1 worker threads in the process).
// Default: default_thread_count(). set_thread_limit(0) restores the
// default; n must be 0..256 (KVFIT_E_ARG otherwise). Workers beyond a lowered
// limit go idle; a raised limit starts workers at once if the pool is
// running (KVFIT_E_NOMEM if the system refuses). Thread-safe.
int thread_limit();
void set_thread_limit(int n);
int default_thread_count();  // the cores this process may use (its CPU affinity), clamped to 1..16

// Splits [0, n) into nth nearly equal parts; returns part ith as [begin, end).
inline void split_range(int64_t n, int ith, int nth, int64_t &begin, int64_t &end) {
    int64_t per = (n + nth - 1) / nth;
    begin = per * ith < n ? per * ith : n;
    end = begin + per < n ? begin + per : n;
}

}  // namespace kvfit
