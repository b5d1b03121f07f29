// A fixed pool of worker threads for data-parallel loops. Decode issues a few
// hundred small parallel loops per token, so dispatch and join spin briefly
// before sleeping: a condition-variable round trip per loop would cost more
// than the work.
#pragma once

#include <cstdint>
#include <functional>

namespace kvfit {

class ThreadPool {
public:
    // n_threads >= 1; the caller is thread 0. Throws KVFIT_E_NOMEM if the
    // system cannot start the workers.
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool &operator=(const ThreadPool &) = delete;

    int size() const { return n_threads_; }
    // Calls fn(ith, nth) exactly once for each ith in [0, nth), nth = size(),
    // and returns when all calls are done; the calling thread runs ith = 0.
    // Normally each ith runs on its own thread, but a worker that has not
    // woken up in time leaves its ith to a thread that has finished, so fn
    // must not assume two ith run concurrently. Not reentrant.
    void run(const std::function<void(int ith, int nth)> &fn);

private:
    void shutdown();  // stops and joins the workers, frees impl_
    struct Impl;
    Impl *impl_;
    int n_threads_;
};

// Splits [0, n) into nth nearly equal parts; returns part ith as [begin, end).
inline void split_range(int64_t n, int ith, int nth, int64_t &begin, int64_t &end) {
    int64_t per = (n + nth - 1) / nth;
    begin = per * ith < n ? per * ith : n;
    end = begin + per < n ? begin + per : n;
}

}  // namespace kvfit
