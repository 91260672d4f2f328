// io::unanswered, the probe behind /healthz, over real io_contexts: one run
// by a thread, one stuck in a handler that blocks, one never run.
#include "popgate/io/io_threads.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using popgate::io::unanswered;

namespace {

// Runs unanswered(threads, limit) on `home` (run here, on the test's thread)
// and returns its answer and how long it took.
std::pair<std::vector<std::size_t>, std::chrono::steady_clock::duration>
probe(asio::io_context& home, std::vector<asio::any_io_executor> const& threads, std::chrono::milliseconds limit)
{
    std::optional<std::vector<std::size_t>> got;
    auto const t0 = std::chrono::steady_clock::now();
    asio::co_spawn(home, unanswered(threads, limit), [&](std::exception_ptr e, std::vector<std::size_t> v) {
        if (!e) got = std::move(v);
    });
    home.run();
    home.restart();
    BOOST_REQUIRE(got);
    return {*got, std::chrono::steady_clock::now() - t0};
}

// An io_context run by a thread of its own until the object goes.
struct running {
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
    std::jthread t{[this] { io.run(); }};
    ~running()
    {
        work.reset();
        io.stop();
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(io_thread_probe, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(threads_that_run_answer_at_once)
{
    asio::io_context home;
    running other;
    auto const [silent, took] = probe(home, {home.get_executor(), other.io.get_executor()}, 2000ms);
    BOOST_TEST(silent.empty());
    BOOST_TEST(took < 1000ms);  // the last answer ends the wait, not the limit
}

BOOST_AUTO_TEST_CASE(a_thread_never_run_is_named_after_the_limit)
{
    asio::io_context home;
    running other;
    asio::io_context idle;  // nobody runs it
    auto const [silent, took] =
        probe(home, {home.get_executor(), idle.get_executor(), other.io.get_executor()}, 200ms);
    BOOST_TEST(silent == std::vector<std::size_t>{1}, boost::test_tools::per_element());
    BOOST_TEST(took >= 200ms);
}

BOOST_AUTO_TEST_CASE(a_thread_stuck_in_a_handler_is_named_and_its_late_answer_is_dropped)
{
    asio::io_context home;
    running stuck;
    std::atomic<bool> release{false};
    asio::post(stuck.io, [&] {
        while (!release) std::this_thread::sleep_for(5ms);
    });
    auto const [silent, took] = probe(home, {home.get_executor(), stuck.io.get_executor()}, 200ms);
    BOOST_TEST(silent == std::vector<std::size_t>{1}, boost::test_tools::per_element());
    // Unstuck, it answers the old probe into nothing, and the next probe passes.
    release = true;
    auto const [again, took2] = probe(home, {home.get_executor(), stuck.io.get_executor()}, 2000ms);
    BOOST_TEST(again.empty());
    (void)took;
    (void)took2;
}

BOOST_AUTO_TEST_SUITE_END()
