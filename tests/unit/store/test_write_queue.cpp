#include "popgate/store/write_queue.hpp"
#include "popgate/metrics/catalog.hpp"
#include "popgate/store/sqlite_store.hpp"

#include "temp_dir.hpp"
#include "test_backend.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace popgate;
using store::write_queue;
namespace asio = boost::asio;

namespace {

store::grant make_grant(std::string address)
{
    store::grant g;
    g.address = std::move(address);
    g.user = "alice";
    g.method = "pass";
    g.listener = "pop3";
    g.granted_at = store::now();
    g.expires_at = g.granted_at + 600;
    return g;
}

std::vector<store::write_op> one(store::write_op op)
{
    std::vector<store::write_op> v;
    v.push_back(std::move(op));
    return v;
}

// Holds the database's write lock, as an administrator's open transaction would.
class write_lock {
public:
    explicit write_lock(test::backend_db const& b) : shell_(b.shell()) { shell_->lock_writes(); }
    void release()
    {
        if (shell_) shell_->unlock();
        shell_.reset();
    }
    ~write_lock() { release(); }
    write_lock(write_lock const&) = delete;
    write_lock& operator=(write_lock const&) = delete;

private:
    std::unique_ptr<test::sql_shell> shell_;
};

template <class Pred>
bool eventually(Pred p)
{
    for (int i = 0; i < 1000; ++i) {
        if (p()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return p();
}

// A store of the backend under test (test_backend.hpp), or of SQLite.
template <test::backend B>
struct backend_queue_fixture {
    test::backend_db backend{B};
    std::unique_ptr<store::store> db = backend.open();
};
struct queue_fixture : backend_queue_fixture<test::backend::under_test> {};
struct sqlite_queue_fixture : backend_queue_fixture<test::backend::sqlite> {};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(write_queue_tests, queue_fixture,
                         *boost::unit_test::label("unit") * boost::unit_test::label("both"))

BOOST_AUTO_TEST_CASE(commit_resumes_after_the_row_is_visible)
{
    write_queue q(*db);
    asio::io_context io;
    std::optional<std::size_t> seen;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            co_await q.commit(one(make_grant("192.0.2.7")));
            // Another connection, as the SMTP side would use.
            seen = db->list_grants(false, store::now()).size();
        },
        asio::detached);
    io.run();
    BOOST_TEST_REQUIRE(seen.has_value());
    BOOST_TEST(*seen == 1u);
}

BOOST_AUTO_TEST_CASE(commit_throws_when_its_first_op_failed)
{
    write_queue q(*db);
    asio::io_context io;
    std::string error;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            try {
                co_await q.commit(one(make_grant("192.0.2.300")));
            } catch (store::store_error const& e) {
                error = e.what();
            }
        },
        asio::detached);
    io.run();
    // SQLite's rule names the column; PostgreSQL's inet type refuses the text.
    BOOST_TEST(error.find(backend.postgresql() ? "inet" : "relay_grants.address") != std::string::npos, error);
    BOOST_TEST(db->list_grants(true, store::now()).empty());
}

BOOST_AUTO_TEST_CASE(logins_queued_behind_a_busy_writer_share_one_commit)
{
    write_queue q(*db);
    write_lock admin(backend);
    std::atomic<int> ok{0}, failed{0};
    constexpr int n = 50;
    for (int i = 0; i < n; ++i) {
        std::vector<store::write_op> ops;
        ops.emplace_back(make_grant("192.0.2." + std::to_string(i + 1)));
        ops.emplace_back(store::audit_record{"grant", "192.0.2." + std::to_string(i + 1), "alice", "unit"});
        q.submit(std::move(ops), [&](std::string const& e) { (e.empty() ? ok : failed)++; });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    BOOST_TEST(ok.load() == 0);  // nothing reported before its commit
    admin.release();
    BOOST_TEST_REQUIRE(eventually([&] { return ok.load() + failed.load() == n; }));
    BOOST_TEST(ok.load() == n);
    BOOST_TEST(q.committed_ops() == 2u * n);
    // The first unit may have been taken alone before the others queued.
    BOOST_TEST(q.transactions() <= 2u);
    BOOST_TEST(db->list_grants(true, store::now()).size() == std::size_t{n});
    BOOST_TEST(db->list_audit(1000).size() == std::size_t{n});
}

BOOST_AUTO_TEST_CASE(a_bad_unit_fails_alone_in_its_batch)
{
    write_queue q(*db);
    write_lock admin(backend);  // so that both land in one batch
    std::string e_bad = "unset", e_good = "unset";
    q.submit(one(make_grant("192.0.2.1")), [](std::string const&) {});
    q.submit(one(make_grant("not-an-address")), [&](std::string const& e) { e_bad = e; });
    q.submit(one(make_grant("192.0.2.2")), [&](std::string const& e) { e_good = e; });
    admin.release();
    BOOST_TEST_REQUIRE(eventually([&] { return q.committed_ops() == 2u; }));
    BOOST_TEST(e_good.empty());
    BOOST_TEST(!e_bad.empty());
    BOOST_TEST(e_bad != "unset");
    BOOST_TEST(db->list_grants(true, store::now()).size() == 2u);
}



BOOST_AUTO_TEST_CASE(best_effort_writes_are_bounded_and_the_accepted_ones_land)
{
    std::size_t accepted = 0, dropped = 0;
    {
        write_queue q(*db);
        write_lock admin(backend);
        for (std::size_t i = 0; i < write_queue::max_backlog + write_queue::max_batch + 10; ++i)
            (q.post(store::audit_record{"deny", "192.0.2.9", "", "unit"}) ? accepted : dropped)++;
        admin.release();
    }  // the destructor applies everything queued
    BOOST_TEST(dropped >= 10u);
    BOOST_TEST(accepted <= write_queue::max_backlog + write_queue::max_batch);
    BOOST_TEST(db->list_audit(100000).size() == accepted);
}

BOOST_AUTO_TEST_CASE(touches_are_summed_per_address_and_written_within_the_interval)
{
    db->upsert_grant(make_grant("192.0.2.9"));
    db->upsert_grant(make_grant("192.0.2.10"));
    auto const t = store::now();
    write_queue q(*db);
    for (int i = 0; i < 500; ++i) BOOST_TEST(q.post(store::grant_touch{"192.0.2.9", t + (i % 7)}));
    BOOST_TEST(q.post(store::grant_touch{"192.0.2.10", t}));
    // No stop, no other write: the periodic round writes them.
    auto hits = [&](std::string const& a) {
        for (auto const& g : db->list_grants(true, store::now()))
            if (g.address == a) return g.hits;
        return std::int64_t{-1};
    };
    BOOST_TEST_REQUIRE(eventually([&] { return hits("192.0.2.9") == 500; }));
    BOOST_TEST(hits("192.0.2.10") == 1);
    BOOST_TEST(q.transactions() == 1u);  // 501 touches, one UPDATE per address, one commit
    for (auto const& g : db->list_grants(true, store::now()))
        if (g.address == "192.0.2.9") BOOST_TEST(g.last_used.value_or(0) == t + 6);
}

BOOST_AUTO_TEST_CASE(stopping_applies_everything_queued)
{
    {
        write_queue q(*db);
        for (int i = 0; i < 100; ++i) BOOST_TEST(q.post(store::audit_record{"deny", "192.0.2.1", "", "unit"}));
    }
    BOOST_TEST(db->list_audit(1000).size() == 100u);
}

BOOST_AUTO_TEST_CASE(stop_runs_and_destroys_every_completion_before_it_returns)
{
    // The daemon relies on this: a completion holds work on the io_context,
    // which is destroyed right after stop().
    write_queue q(*db);
    auto sentinel = std::make_shared<int>(0);
    std::weak_ptr<int> watch = sentinel;
    bool ran = false;
    {
        write_lock admin(backend);  // keeps the unit queued until stop()
        q.submit(one(make_grant("192.0.2.7")), [s = std::move(sentinel), &ran](std::string const& e) {
            ran = e.empty() && *s == 0;
        });
    }
    q.stop();
    BOOST_TEST(ran);
    BOOST_TEST(watch.expired());
    q.stop();  // idempotent
    BOOST_TEST(db->list_grants(true, store::now()).size() == 1u);
}

BOOST_AUTO_TEST_SUITE_END()

// The login's own deadline against a lock held by another writer: SQLite's
// lock wait. The PostgreSQL store bounds each statement by
// storage.busy_timeout_ms (statement_timeout) instead, so these stay SQLite only.
BOOST_FIXTURE_TEST_SUITE(write_queue_deadlines, sqlite_queue_fixture, *boost::unit_test::label("unit"))

// Item 5 of issue 17: with the database locked, each commit fails at its own
// deadline (the busy timeout from when it was queued), not behind the waits
// of the commits queued before it; and a commit reported failed is never
// written afterwards.
BOOST_AUTO_TEST_CASE(each_commit_fails_at_its_own_deadline_and_is_never_written_later)
{
    using namespace std::chrono;
    auto const timeout = milliseconds(1000);
    write_queue q(*db, timeout);
    write_lock admin(backend);
    auto const commits = [] { return metrics::grant_commit_seconds.get().read().cumulative.back(); };
    auto const commits_before = commits();
    struct outcome {
        steady_clock::time_point queued, done;
        std::string error = "unset";
        std::atomic<bool> finished{false};
    };
    std::array<outcome, 4> out;
    auto submit = [&](std::size_t i) {
        out[i].queued = steady_clock::now();
        q.submit(one(make_grant("192.0.2." + std::to_string(i + 1))), [&out, i](std::string const& e) {
            out[i].done = steady_clock::now();
            out[i].error = e;
            out[i].finished = true;
        });
    };
    submit(0);
    // The others queue while the first one's batch waits for the lock.
    std::this_thread::sleep_for(milliseconds(300));
    for (std::size_t i = 1; i < out.size(); ++i) submit(i);
    BOOST_TEST_REQUIRE(eventually([&] {
        return std::all_of(out.begin(), out.end(), [](outcome const& o) { return o.finished.load(); });
    }));
    for (auto const& o : out) {
        auto const waited = o.done - o.queued;
        BOOST_TEST(o.error.find("locked") != std::string::npos, o.error);
        BOOST_TEST(waited >= timeout - milliseconds(20));
        // Behind the first batch they would have waited 1.7 s.
        BOOST_TEST(waited < timeout + milliseconds(500), duration_cast<milliseconds>(waited).count() << " ms");
    }
    // Failed, they are no commits: popgate_grant_commit_seconds (whose p99
    // an alert watches) does not take the lock's wait for a commit's.
    BOOST_TEST(commits() == commits_before);
    admin.release();
    // A commit after the lock is gone goes through, alone: nothing of the
    // failed ones was kept to be written later.
    std::string last = "unset";
    q.submit(one(make_grant("192.0.2.99")), [&](std::string const& e) { last = e; });
    BOOST_TEST_REQUIRE(eventually([&] { return last != "unset"; }));
    BOOST_TEST(last.empty(), last);
    BOOST_TEST(commits() == commits_before + 1);
    auto const grants = db->list_grants(true, store::now());
    BOOST_TEST_REQUIRE(grants.size() == 1u);
    BOOST_TEST(grants[0].address == "192.0.2.99");
}

BOOST_AUTO_TEST_CASE(a_commit_keeps_its_own_deadline_when_an_earlier_one_in_its_batch_expires)
{
    using namespace std::chrono;
    write_queue q(*db, milliseconds(300));
    std::optional<write_lock> admin(std::in_place, backend);
    std::string first = "unset", second = "unset";
    q.submit(one(make_grant("192.0.2.1")), [&](std::string const& e) { first = e; });
    q.set_busy_timeout(seconds(30));
    q.submit(one(make_grant("192.0.2.2")), [&](std::string const& e) { second = e; });
    BOOST_TEST_REQUIRE(eventually([&] { return first != "unset"; }));
    BOOST_TEST(!first.empty());
    std::this_thread::sleep_for(milliseconds(200));
    BOOST_TEST(second == "unset");  // still waiting, within its own 30 s
    admin.reset();
    BOOST_TEST_REQUIRE(eventually([&] { return second != "unset"; }));
    BOOST_TEST(second.empty(), second);
    auto const grants = db->list_grants(true, store::now());
    BOOST_TEST_REQUIRE(grants.size() == 1u);
    BOOST_TEST(grants[0].address == "192.0.2.2");
}

BOOST_AUTO_TEST_SUITE_END()
