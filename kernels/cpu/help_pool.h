// A fork/join for a few long tasks that never waits for a thread to start: the caller runs tasks 0..n-1 itself,
// and up to `threads - 1` persistent workers, once woken, claim the tasks that are still unclaimed. The caller waits
// only for tasks a worker has already claimed. On a loaded machine (load 8-10 on 2 cores) an OpenMP region's join
// waited for a descheduled worker to get a time slice: the B=1 T=256 d=128 recurrence forward took a median 20-24 ms
// (multiples of the 4 ms tick) with 2 OpenMP threads and 1.6 ms with 1; here it takes at most the one-thread time.
// Which participant runs a task varies from run to run: results must not depend on it (per-task partials).
// After fork() the child has no workers, so it runs everything on the caller; a second concurrent caller does too.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>

#include <unistd.h>

namespace mmrec::cpu {

class HelpPool {
 public:
  // f(task, participant) for task in [0, n); participant 0 is the caller, 1 .. threads-1 the workers. f must not
  // call run.
  template <class F>
  void run(int64_t n, int threads, F&& f) {
    std::unique_lock<std::mutex> caller(caller_mutex_, std::try_to_lock);
    if (threads <= 1 || n <= 1 || !caller.owns_lock() || getpid() != pid_ || n >= kMaxTasks) {
      for (int64_t task = 0; task < n; ++task) f(task, 0);
      return;
    }
    threads = std::min(threads, kMaxThreads);
    while (int(workers_) < threads - 1) {
      std::thread(&HelpPool::work, this, int(workers_) + 1).detach();
      ++workers_;
    }
    using Fn = std::remove_reference_t<F>;
    fn_ = [](const void* ctx, int64_t task, int participant) { (*static_cast<const Fn*>(ctx))(task, participant); };
    ctx_ = &f;
    const uint64_t gen = ((claim_.load() >> 52) + 1) & 0xfff;
    claim_.store((gen << 52) | (uint64_t(threads) << 44) | (uint64_t(n) << 22));  // next = 0
    {
      std::lock_guard<std::mutex> lock(wake_mutex_);
      ++published_;
    }
    wake_.notify_all();
    while (claim_and_run(0)) {
    }
    for (int spins = 0; busy_.load() != 0;) {
      if (spins < 64)
        ++spins;
      else
        std::this_thread::yield();
    }
  }

  static HelpPool& instance() {
    static HelpPool* pool = new HelpPool();  // never destroyed: detached workers wait on its members
    return *pool;
  }

 private:
  static constexpr int kMaxThreads = 255;
  static constexpr int64_t kMaxTasks = int64_t(1) << 22;

  // claim_ = generation (12 bits) | participant limit (8) | tasks n (22) | next unclaimed task (22): one word, so
  // a worker decides from one load whether the job it sees has a task left, and claims it with one CAS.
  // A worker reads fn_ and ctx_ only after claiming a task; the caller replaces them only once every task is
  // claimed and busy_ (raised by a worker before it loads claim_) is back to 0.
  bool claim_and_run(int participant) {
    uint64_t c = claim_.load();
    for (;;) {
      const int64_t next = int64_t(c & 0x3fffff), n = int64_t((c >> 22) & 0x3fffff);
      if (participant >= int((c >> 44) & 0xff) || next >= n) return false;
      if (claim_.compare_exchange_weak(c, c + 1)) {
        fn_(ctx_, next, participant);
        return true;
      }
    }
  }

  void work(int participant) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(wake_mutex_);
        wake_.wait(lock, [&] { return published_ != seen; });
        seen = published_;
      }
      busy_.fetch_add(1);
      while (claim_and_run(participant)) {
      }
      busy_.fetch_sub(1);
    }
  }

  HelpPool() : pid_(getpid()) {}

  const pid_t pid_;
  std::mutex caller_mutex_;
  unsigned workers_ = 0;  // started workers (only the caller holding caller_mutex_ touches it)
  std::atomic<uint64_t> claim_{0};
  std::atomic<int> busy_{0};
  void (*fn_)(const void*, int64_t, int) = nullptr;
  const void* ctx_ = nullptr;
  std::mutex wake_mutex_;
  std::condition_variable wake_;
  uint64_t published_ = 0;
};

}  // namespace mmrec::cpu
