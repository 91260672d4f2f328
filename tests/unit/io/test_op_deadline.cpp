#include "popgate/io/line_io.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using popgate::io::op_deadline;
using namespace std::chrono_literals;

namespace {

// A connected loopback pair: `near` is the side under a deadline, `far`
// the peer the test writes from (or never does).
struct pair {
    asio::io_context io;
    tcp::socket near{io}, far{io};
    pair()
    {
        tcp::acceptor a(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
        near.connect(a.local_endpoint());
        far = a.accept();
    }
};

struct outcome {
    bool done = false;
    bool expired = false;
    boost::system::error_code ec;
    std::chrono::steady_clock::duration took{};
};

// One read on p.near under `d`, recorded in `out`.
asio::awaitable<void> read_under(pair& p, op_deadline& d, std::chrono::milliseconds limit, outcome& out)
{
    char b[64];
    auto const t0 = std::chrono::steady_clock::now();
    d.start(p.near, limit);
    auto [ec, n] = co_await p.near.async_read_some(asio::buffer(b), asio::as_tuple(asio::use_awaitable));
    (void)n;
    out.expired = d.stop();
    out.ec = ec;
    out.took = std::chrono::steady_clock::now() - t0;
    out.done = true;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(op_deadline_bounds, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(a_read_that_runs_over_is_ended_and_reported)
{
    pair p;
    op_deadline d(p.io.get_executor());
    outcome out;
    asio::co_spawn(p.io, read_under(p, d, 50ms, out), asio::detached);
    p.io.run_for(2s);
    BOOST_TEST_REQUIRE(out.done);
    BOOST_TEST(out.expired);
    BOOST_TEST(!!out.ec);
    BOOST_TEST(!p.near.is_open());
    BOOST_TEST(out.took >= 50ms);
    BOOST_TEST(out.took < 1s);
}

// Each operation has its own limit: a chain of reads that each finish in
// time is never cut off, however long the chain takes in all.
BOOST_AUTO_TEST_CASE(operations_that_end_in_time_are_never_cut_off)
{
    pair p;
    op_deadline d(p.io.get_executor());
    int finished = 0;
    bool any_expired = false;
    asio::co_spawn(
        p.io,
        [&]() -> asio::awaitable<void> {
            for (int i = 0; i < 6; ++i) {
                outcome out;
                asio::steady_timer later(p.io, 60ms);
                later.async_wait([&](boost::system::error_code) { p.far.write_some(asio::buffer("x", 1)); });
                co_await read_under(p, d, 250ms, out);
                any_expired = any_expired || out.expired || !!out.ec;
                ++finished;
            }
        },
        asio::detached);
    p.io.run_for(3s);
    BOOST_TEST(finished == 6);  // 6 x 60 ms: more than one limit of 250 ms in all
    BOOST_TEST(!any_expired);
    BOOST_TEST(p.near.is_open());
}

// The sleeping timer was set for a long limit; an operation with a shorter
// one wakes it, so the shorter limit holds.
BOOST_AUTO_TEST_CASE(a_shorter_limit_than_the_sleeping_one_holds)
{
    pair p;
    op_deadline d(p.io.get_executor());
    outcome first, second;
    asio::co_spawn(
        p.io,
        [&]() -> asio::awaitable<void> {
            asio::steady_timer soon(p.io, 20ms);
            soon.async_wait([&](boost::system::error_code) { p.far.write_some(asio::buffer("x", 1)); });
            co_await read_under(p, d, 10s, first);  // ends in time; the timer still sleeps towards 10 s
            co_await read_under(p, d, 50ms, second);
        },
        asio::detached);
    p.io.run_for(3s);
    BOOST_TEST_REQUIRE(first.done);
    BOOST_TEST(!first.expired);
    BOOST_TEST_REQUIRE(second.done);
    BOOST_TEST(second.expired);
    BOOST_TEST(second.took < 1s);
}

// Nothing running when the limit of the last operation passes: the socket
// stays open (an idle kept connection is not the deadline's business).
BOOST_AUTO_TEST_CASE(an_idle_socket_is_left_alone)
{
    pair p;
    op_deadline d(p.io.get_executor());
    outcome out;
    asio::steady_timer soon(p.io, 10ms);
    soon.async_wait([&](boost::system::error_code) { p.far.write_some(asio::buffer("x", 1)); });
    asio::co_spawn(p.io, read_under(p, d, 50ms, out), asio::detached);
    p.io.run_for(300ms);
    BOOST_TEST_REQUIRE(out.done);
    BOOST_TEST(!out.expired);
    BOOST_TEST(p.near.is_open());
}

BOOST_AUTO_TEST_SUITE_END()
