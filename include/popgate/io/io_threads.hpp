#pragma once
// The daemon's I/O threads, each running its own io_context. A connection is
// placed on one of them at accept and stays there until it closes, so its
// steps never hand off to another thread or wait for a scheduler lock that
// the others share: with one io_context run by two threads, a relay at c=1
// spent 17% of its CPU passing that lock back and forth. Each context is run
// by one thread, so it is also the connection's strand.
//
// Context 0 also holds the acceptors, the signal set and the daemon's timers.
// Blocking work (crypt, SQLite, PostgreSQL) still goes to the shared blocking
// pool and comes back to the connection's own context.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <vector>

namespace popgate::io {

class io_threads {
public:
    explicit io_threads(unsigned count);
    io_threads(io_threads const&) = delete;
    io_threads& operator=(io_threads const&) = delete;

    boost::asio::io_context& main() { return *contexts_.front(); }
    unsigned size() const { return static_cast<unsigned>(contexts_.size()); }
    // Where the next connection lives: the contexts in turn.
    boost::asio::any_io_executor next();
    // Every context's executor, main() first (for the health probe).
    std::vector<boost::asio::any_io_executor> executors() const;

    // Runs every context, the calling thread running main(); returns once
    // stop() was called and every thread has returned.
    void run();
    void stop();

private:
    using guard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;
    std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
    std::vector<guard> guards_;  // a context without a connection must not return from run()
    std::atomic<unsigned> next_{0};
};

// The positions in `threads` of the event loops that did not run a posted
// no-op within `limit`: a thread stuck in a long call, or one no longer
// running. Waits on the caller's executor, which must not be blocked by the
// wait itself (an I/O thread's coroutine); answers that come late are
// dropped. /healthz asks this of the daemon's I/O threads.
boost::asio::awaitable<std::vector<std::size_t>> unanswered(std::vector<boost::asio::any_io_executor> const& threads,
                                                           std::chrono::steady_clock::duration limit);

}  // namespace popgate::io
