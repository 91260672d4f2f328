#pragma once
// How long the blocking-pool task running on this thread waited for a
// thread (io::run_blocking sets it). A store call that finds the wait past
// its budget gives up at once: behind a held lock, the queue of waiting
// decisions drains in one budget instead of one budget per pool thread's
// turn.
#include <chrono>

namespace popgate::io {

inline thread_local std::chrono::steady_clock::duration task_waited{};  // zero outside a pool task

}  // namespace popgate::io
