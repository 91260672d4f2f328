#pragma once
// The daemon's one database writer: grants, grant touches and audit rows from
// every session go through one thread that commits them in batches (group
// commit). SQLite takes one writer at a time; writers on several threads wait
// for each other in its busy handler, which sleeps for milliseconds. One
// thread taking whatever has queued while the previous commit ran turns N
// logins' N commits into one, without delaying a login that arrives alone.
//
// commit() resumes its coroutine only after the transaction holding its ops
// committed (DESIGN decision 4: the grant is committed before the +OK).
// Each unit waits for a database locked by another writer until its own
// deadline (the busy timeout from when it was queued), not behind the
// deadlines of the units before it: a batch waits until the earliest
// deadline among its units, those past theirs then fail (they are never
// tried again, so nothing is committed after its caller heard "failed") and
// the others go back to the head of the queue.
// post() is best effort (a touch, a deny audit): it is dropped, with a
// warning, when max_backlog such writes are already waiting. Grant touches
// (hits, last_used: statistics; and the grant quota counters, which the
// relay decision keeps exact in memory on this node) are added up per
// address and written once per touch_interval, not once per relayed recipient.
#include "popgate/store/store.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace popgate::store {

class write_queue {
public:
    static constexpr std::size_t max_batch = 1024;
    static constexpr std::size_t max_backlog = 20000;
    static constexpr std::chrono::milliseconds touch_interval{1000};

    explicit write_queue(store& db, std::chrono::milliseconds busy_timeout = std::chrono::milliseconds(5000));
    ~write_queue();  // stop()
    // Applies what is queued, then ends the writer thread; idempotent. The
    // daemon calls it before the io_context goes: a commit's completion holds
    // work on the io_context and must be destroyed while it still exists.
    void stop();
    write_queue(write_queue const&) = delete;
    write_queue& operator=(write_queue const&) = delete;

    // Queues `ops` as one unit; `done` runs on the writer thread with the
    // error of ops[0] ("" = committed). The failures of later ops (an audit
    // row beside a grant) are logged, not reported.
    void submit(std::vector<write_op> ops, std::function<void(std::string const&)> done);

    // Awaitable form of submit(): returns once committed; throws
    // store_error (store_errc::unavailable) when ops[0] was not.
    auto commit(std::vector<write_op> ops)
    {
        namespace asio = boost::asio;
        return asio::async_initiate<asio::use_awaitable_t<> const, void(std::exception_ptr)>(
            [this](auto handler, std::vector<write_op> o) {
                auto work = asio::make_work_guard(asio::get_associated_executor(handler));
                auto h = std::make_shared<decltype(handler)>(std::move(handler));
                submit(std::move(o), [h, work = std::move(work)](std::string const& err) mutable {
                    std::exception_ptr ep;
                    if (!err.empty())
                        ep = std::make_exception_ptr(store_error(store_errc::unavailable, err));
                    auto ex = asio::get_associated_executor(*h);
                    asio::dispatch(ex, [h, ep]() mutable { std::move (*h)(ep); });
                });
            },
            asio::use_awaitable, std::move(ops));
    }

    // Best effort, nobody waits: false when dropped (backlog full or stopping).
    bool post(write_op op);

    // How long a unit queued from now on may wait for a locked database (SIGHUP).
    void set_busy_timeout(std::chrono::milliseconds t) noexcept;

    // Writes committed so far and transactions that carried them (for tests).
    std::size_t committed_ops() const;
    std::size_t transactions() const;

private:
    using clock = std::chrono::steady_clock;
    struct unit {
        std::vector<write_op> ops;
        std::function<void(std::string const&)> done;  // empty for post()
        clock::time_point deadline;
        bool in_backlog = false;  // a post() counted in backlog_
        clock::time_point queued = clock::now();  // for popgate_grant_commit_seconds
    };
    clock::time_point deadline_from_now() const noexcept;
    void run();
    void apply(std::vector<unit>& batch);

    store& db_;
    std::atomic<std::int64_t> busy_timeout_ms_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::vector<unit> queue_;
    struct touch_sum {
        unix_time at = 0;
        std::int64_t count = 0;
        unix_time quota_hour = 0;
        std::int64_t messages = 0;
        std::int64_t recipients = 0;
    };
    std::unordered_map<std::string, touch_sum> touches_;  // at most max_backlog addresses
    std::size_t backlog_ = 0;  // queued post() writes
    std::size_t dropped_ = 0;
    std::size_t committed_ = 0;
    std::size_t transactions_ = 0;
    bool stopping_ = false;
    std::thread thread_;  // last: started once the rest exists
};

}  // namespace popgate::store
