#include "popgate/auth/failure_tracker.hpp"

#include <boost/test/unit_test.hpp>

using namespace popgate;
using namespace std::chrono_literals;

namespace {
net::ip_address ip(char const* s) { return *net::parse_ip(s); }
auth::throttle_settings small()
{
    auth::throttle_settings s;
    s.window = 60s;
    s.max_failures_per_ip = 3;
    s.block_time = 30s;
    s.base_delay = 100ms;
    s.max_delay = 1000ms;
    return s;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(failure_tracker, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(delay_grows_and_is_capped)
{
    auth::failure_tracker t(small());
    auto const t0 = std::chrono::steady_clock::time_point{} + 1000s;
    auto s = small();
    s.max_failures_per_ip = 100;
    t.set_settings(s);
    std::vector<long> delays;
    for (int i = 0; i < 6; ++i) delays.push_back(t.record_failure(ip("192.0.2.1"), "alice", t0).delay.count());
    BOOST_TEST(delays == (std::vector<long>{100, 200, 400, 800, 1000, 1000}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(address_blocked_past_threshold_then_released)
{
    auth::failure_tracker t(small());
    auto const t0 = std::chrono::steady_clock::time_point{} + 1000s;
    BOOST_TEST(!t.record_failure(ip("192.0.2.1"), "a", t0).now_blocked);
    BOOST_TEST(!t.record_failure(ip("192.0.2.1"), "b", t0).now_blocked);
    BOOST_TEST(!t.blocked(ip("192.0.2.1"), t0).has_value());
    BOOST_TEST(t.record_failure(ip("192.0.2.1"), "c", t0).now_blocked);
    auto left = t.blocked(ip("192.0.2.1"), t0 + 10s);
    BOOST_TEST_REQUIRE(left.has_value());
    BOOST_TEST(left->count() == 20);
    // A further failure while blocked does not report the block again.
    BOOST_TEST(!t.record_failure(ip("192.0.2.1"), "d", t0 + 1s).now_blocked);
    BOOST_TEST(!t.blocked(ip("192.0.2.1"), t0 + 31s).has_value());
}

BOOST_AUTO_TEST_CASE(flood_against_user_does_not_lock_user_elsewhere)
{
    auth::failure_tracker t(small());
    auto const t0 = std::chrono::steady_clock::time_point{} + 1000s;
    for (int i = 0; i < 10; ++i) t.record_failure(ip("198.51.100.66"), "alice", t0);
    BOOST_TEST(t.blocked(ip("198.51.100.66"), t0).has_value());
    BOOST_TEST(!t.blocked(ip("192.0.2.7"), t0).has_value());
}

BOOST_AUTO_TEST_CASE(failures_outside_window_are_forgotten)
{
    auth::failure_tracker t(small());
    auto const t0 = std::chrono::steady_clock::time_point{} + 1000s;
    t.record_failure(ip("192.0.2.1"), "a", t0);
    t.record_failure(ip("192.0.2.1"), "a", t0 + 1s);
    auto v = t.record_failure(ip("192.0.2.1"), "a", t0 + 120s);
    BOOST_TEST(v.ip_count == 1u);
    BOOST_TEST(v.delay.count() == 100);
    BOOST_TEST(!v.now_blocked);
    t.expire(t0 + 500s);
    BOOST_TEST(t.tracked() == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
