#include "popgate/store/write_queue.hpp"

#include "popgate/log/log.hpp"
#include "popgate/metrics/catalog.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <iterator>
#include <thread>
#include <variant>

namespace popgate::store {

namespace {
char const* kind_name(write_op const& op)
{
    static constexpr char const* names[] = {"grant", "touch", "audit", "cap"};
    static_assert(std::size(names) == std::variant_size_v<write_op>, "a name for every write_op");
    return names[op.index()];
}
}  // namespace

write_queue::write_queue(store& db, std::chrono::milliseconds busy_timeout)
    : db_(db), busy_timeout_ms_(busy_timeout.count()), thread_([this] { run(); })
{
}

void write_queue::set_busy_timeout(std::chrono::milliseconds t) noexcept
{
    busy_timeout_ms_.store(t.count(), std::memory_order_relaxed);
}

write_queue::clock::time_point write_queue::deadline_from_now() const noexcept
{
    return clock::now() + std::chrono::milliseconds(busy_timeout_ms_.load(std::memory_order_relaxed));
}

write_queue::~write_queue() { stop(); }

void write_queue::stop()
{
    {
        std::lock_guard lock(mutex_);
        if (stopping_ && !thread_.joinable()) return;
        stopping_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
    if (dropped_) spdlog::warn("write queue dropped={} best-effort writes (backlog full)", dropped_);
}

void write_queue::submit(std::vector<write_op> ops, std::function<void(std::string const&)> done)
{
    {
        std::lock_guard lock(mutex_);
        if (!stopping_) {
            queue_.push_back({std::move(ops), std::move(done), deadline_from_now(), false});
            wake_.notify_one();
            return;
        }
    }
    done("the daemon is shutting down");
}

bool write_queue::post(write_op op)
{
    std::size_t dropped = 0;
    {
        std::lock_guard lock(mutex_);
        if (auto const* t = std::get_if<grant_touch>(&op); t && !stopping_) {
            auto it = touches_.find(t->address);
            if (it == touches_.end() && touches_.size() < max_backlog)
                it = touches_.emplace(t->address, touch_sum{}).first;
            if (it != touches_.end()) {
                auto& sum = it->second;
                sum.at = std::max(sum.at, t->at);
                sum.count += t->count;
                // Quota use of a newer hour replaces an older hour's (the
                // store starts that hour's counts again from these).
                if (t->quota_hour > sum.quota_hour) {
                    sum.quota_hour = t->quota_hour;
                    sum.messages = sum.recipients = 0;
                }
                if (t->quota_hour == sum.quota_hour) {
                    sum.messages += t->messages;
                    sum.recipients += t->recipients;
                }
                return true;  // the writer picks the sums up on its next round
            }
        } else if (!stopping_ && backlog_ < max_backlog) {
            ++backlog_;
            std::vector<write_op> ops;
            ops.push_back(std::move(op));
            queue_.push_back({std::move(ops), {}, deadline_from_now(), true});
            wake_.notify_one();
            return true;
        }
        dropped = ++dropped_;
    }
    // The store is stuck or far behind: say so, without a line per write.
    if (dropped % 1000 == 1)
        spdlog::warn("write queue full backlog={} dropped={} (grant touches and deny audits are best effort)",
                     max_backlog, dropped);
    return false;
}

std::size_t write_queue::committed_ops() const
{
    std::lock_guard lock(mutex_);
    return committed_;
}

std::size_t write_queue::transactions() const
{
    std::lock_guard lock(mutex_);
    return transactions_;
}

void write_queue::run()
{
    std::vector<unit> batch;
    auto touches_due = std::chrono::steady_clock::now() + touch_interval;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            wake_.wait_until(lock, touches_due, [&] { return stopping_ || !queue_.empty(); });
            auto const now = std::chrono::steady_clock::now();
            bool const flush_touches = !touches_.empty() && (stopping_ || now >= touches_due);
            if (queue_.empty() && !flush_touches) {
                if (stopping_) return;  // everything applied
                if (now >= touches_due) touches_due = now + touch_interval;
                continue;
            }
            // Whatever queued while the last commit ran goes into this one.
            std::size_t ops = 0, n = 0;
            while (n < queue_.size() && ops < max_batch) ops += queue_[n++].ops.size();
            batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.begin() + n));
            queue_.erase(queue_.begin(), queue_.begin() + n);
            for (auto& u : batch)
                if (u.in_backlog) {
                    --backlog_;
                    u.in_backlog = false;  // tried again after a busy round: no longer counted
                }
            if (flush_touches) {
                unit u;
                u.deadline = deadline_from_now();
                for (auto& [address, t] : touches_) u.ops.push_back(grant_touch{address, t.at, t.count, t.quota_hour, t.messages, t.recipients});
                touches_.clear();
                batch.push_back(std::move(u));
                touches_due = now + touch_interval;
            }
        }
        apply(batch);
        batch.clear();
    }
}

void write_queue::apply(std::vector<unit>& batch)
{
    std::vector<write_op> ops;
    auto deadline = clock::time_point::max();
    for (auto& u : batch) {
        deadline = std::min(deadline, u.deadline);
        for (auto& op : u.ops) ops.push_back(std::move(op));
    }
    std::vector<std::string> errors;
    std::string whole;  // the transaction failed: every op shares the error
    bool busy = false;
    try {
        db_.write_batch(ops, errors, deadline);
    } catch (store_error const& e) {
        whole = e.what();
        busy = e.code() == store_errc::busy;
    } catch (std::exception const& e) {
        whole = e.what();
    }
    if (busy) {
        // Another writer held the database until the earliest deadline of
        // the batch. The units past their own deadline fail and are dropped:
        // their callers are told so and nothing of theirs is written later.
        // The others go back, ahead of whatever queued since, each still
        // with its own deadline.
        auto const now = clock::now();
        std::vector<unit> again, expired;
        std::size_t i = 0, again_ops = 0;
        for (auto& u : batch) {
            bool const keep = u.deadline > now;
            for (auto& op : u.ops) {
                if (keep) op = std::move(ops[i]);
                ++i;
            }
            if (keep) again_ops += u.ops.size();
            (keep ? again : expired).push_back(std::move(u));
        }
        if (!expired.empty())
            spdlog::error("write batch failed ops={} retried={} error={}", ops.size() - again_ops, again_ops,
                          log::field(whole));
        if (!again.empty()) {
            std::lock_guard lock(mutex_);
            queue_.insert(queue_.begin(), std::make_move_iterator(again.begin()), std::make_move_iterator(again.end()));
        }
        // SQLite may answer busy before the deadline (without waiting):
        // do not spin on it.
        if (expired.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        batch = std::move(expired);
    } else if (!whole.empty()) {
        spdlog::error("write batch failed ops={} error={}", ops.size(), log::field(whole));
    }
    std::size_t i = 0, applied = 0;
    for (auto& u : batch) {
        std::string const first = u.ops.empty() ? std::string{} : whole.empty() ? errors[i] : whole;
        for (std::size_t k = 0; k < u.ops.size(); ++k, ++i) {
            auto const& err = whole.empty() ? errors[i] : whole;
            if (std::holds_alternative<grant>(u.ops[k]))
                metrics::grant_writes.with({err.empty() ? "committed" : "failed"}).inc();
            if (err.empty()) {
                ++applied;
            } else if (whole.empty()) {
                // A failed op in a committed batch: the others went in.
                spdlog::error("write op failed kind={} error={}", kind_name(ops[i]), log::field(err));
            }
        }
        if (u.done) {
            // Commits only (a failed one is counted by grant_writes{failed}):
            // a lock that failed logins at busy_timeout_ms must not read as
            // commits of that length.
            if (first.empty())
                metrics::grant_commit_seconds.get().observe(
                    std::chrono::duration<double>(clock::now() - u.queued).count());
            u.done(first);
        }
    }
    std::lock_guard lock(mutex_);
    committed_ += applied;
    if (whole.empty()) ++transactions_;
}

}  // namespace popgate::store
