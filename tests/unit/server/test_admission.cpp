#include "popgate/server/admission.hpp"

#include <boost/test/unit_test.hpp>

#include <string>

using namespace popgate;
using server::address_window;

namespace {

net::ip_address v4(std::uint32_t n)
{
    return *net::parse_ip(std::to_string(n >> 24 & 255) + "." + std::to_string(n >> 16 & 255) + "." +
                          std::to_string(n >> 8 & 255) + "." + std::to_string(n & 255));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(admission, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(counts_per_address_within_the_window)
{
    address_window w(std::chrono::minutes(1));
    auto const t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
    BOOST_TEST(w.add(v4(1), t0) == 1u);
    BOOST_TEST(w.add(v4(1), t0 + std::chrono::seconds(30)) == 2u);
    BOOST_TEST(w.add(v4(2), t0 + std::chrono::seconds(30)) == 1u);
    BOOST_TEST(w.count(v4(1), t0 + std::chrono::seconds(61)) == 1u);  // the first has left the window
    BOOST_TEST(w.count(v4(1), t0 + std::chrono::seconds(91)) == 0u);
}

// A flood of distinct addresses: the idle ones are swept once the map has
// doubled, those still in their window are kept, and the map does not grow
// past twice what one window holds.
BOOST_AUTO_TEST_CASE(idle_addresses_are_swept_and_memory_stays_bounded)
{
    address_window w(std::chrono::minutes(1));
    auto t = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
    std::uint32_t next = 1 << 24;
    auto const flood = [&](std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) w.add(v4(next++), t);
    };
    flood(address_window::first_sweep);
    BOOST_TEST(w.tracked() == address_window::first_sweep);
    t += std::chrono::minutes(2);  // all of those are idle now
    // the first address past the mark sweeps them; the new ones are kept
    flood(address_window::first_sweep / 2);
    BOOST_TEST(w.tracked() == address_window::first_sweep / 2);
    // Five windows of 150,000 addresses each: never more than twice one window.
    for (int round = 0; round < 5; ++round) {
        t += std::chrono::minutes(2);
        flood(150000);
        BOOST_TEST(w.tracked() <= 2u * 150000u + 1u);
    }
    BOOST_TEST(w.add(v4(next - 1), t) == 2u);  // the latest address still counted
}

// Mail clients and service clients (policy, HTTP) have budgets apart: a
// full house of either leaves the other's places free, and the per-address
// limits are the mail clients' alone.
BOOST_AUTO_TEST_CASE(service_sessions_have_a_budget_apart_from_mail_sessions)
{
    using server::address_limits;
    server::admission_control a;
    config::settings s;
    s.max_sessions = 2;
    s.max_sessions_per_ip = 2;
    s.max_service_sessions = 1;
    s.max_connections_per_minute = 0;
    server::refusal why;
    BOOST_TEST(a.admit(v4(1), s, why));
    BOOST_TEST(a.admit(v4(1), s, why));
    BOOST_TEST(!a.admit(v4(2), s, why));
    BOOST_TEST(why.why == "too many sessions (limits.max_sessions=2)");
    BOOST_TEST(why.limit == "max_sessions");
    BOOST_TEST(a.admit(v4(1), s, why, address_limits::exempt));  // neither the total nor the address is full
    BOOST_TEST(!a.admit(v4(3), s, why, address_limits::exempt));
    BOOST_TEST(why.why == "too many service sessions (limits.max_service_sessions=1)");  // no protocol named
    BOOST_TEST(why.limit == "max_service_sessions");
    BOOST_TEST(a.active() == 2u);
    a.release(v4(1), address_limits::exempt);
    BOOST_TEST(a.active() == 2u);  // a service's end frees no mail client's place
    BOOST_TEST(!a.admit(v4(2), s, why));
    BOOST_TEST(a.admit(v4(3), s, why, address_limits::exempt));
    a.release(v4(1));
    BOOST_TEST(a.admit(v4(2), s, why));
}

// Each service protocol has its budget: a local process that holds every
// HTTP place leaves the MTA's policy lookups theirs.
BOOST_AUTO_TEST_CASE(each_service_protocol_has_its_own_budget)
{
    using server::address_limits;
    server::admission_control a;
    config::settings s;
    s.max_service_sessions = 2;
    server::refusal why;
    BOOST_TEST(a.admit(v4(1), s, why, address_limits::exempt, "http"));
    BOOST_TEST(a.admit(v4(1), s, why, address_limits::exempt, "http"));
    BOOST_TEST(!a.admit(v4(1), s, why, address_limits::exempt, "http"));
    BOOST_TEST(why.why == "too many http sessions (limits.max_service_sessions=2)");
    BOOST_TEST(why.limit == "max_service_sessions");
    BOOST_TEST(a.admit(v4(1), s, why, address_limits::exempt, "policy"));
    BOOST_TEST(a.admit(v4(1), s, why, address_limits::exempt, "policy"));
    BOOST_TEST(!a.admit(v4(1), s, why, address_limits::exempt, "policy"));
    BOOST_TEST(why.why == "too many policy sessions (limits.max_service_sessions=2)");
    BOOST_TEST(why.limit == "max_service_sessions");
    a.release(v4(1), address_limits::exempt, "policy");
    BOOST_TEST(!a.admit(v4(1), s, why, address_limits::exempt, "http"));  // a policy place freed none of HTTP's
    BOOST_TEST(a.admit(v4(1), s, why, address_limits::exempt, "policy"));
}

// A balancer's own connections (a PROXY header naming no client) are
// counted in the sessions, the balancer's address included, and not in the
// windows that judge one client: its health checks do not lock it out, and
// the clients it names are still limited.
BOOST_AUTO_TEST_CASE(a_balancers_own_connections_skip_the_per_minute_window)
{
    using server::address_limits;
    server::admission_control a;
    config::settings s;
    s.max_sessions = 3;
    s.max_sessions_per_ip = 2;
    s.max_connections_per_minute = 2;
    s.max_slow_sessions_per_ip = 1;
    server::refusal why;
    for (int i = 0; i < 10; ++i) {  // ten health checks in a minute
        BOOST_TEST(a.admit(v4(1), s, why, address_limits::balancer));
        a.release(v4(1), address_limits::balancer);
    }
    a.note_slow(v4(1));
    BOOST_TEST(a.admit(v4(1), s, why, address_limits::balancer));  // nor the slow-session window
    BOOST_TEST(a.admit(v4(1), s, why, address_limits::balancer));
    BOOST_TEST(!a.admit(v4(1), s, why, address_limits::balancer));  // the balancer's sessions are counted
    BOOST_TEST(why.why == "too many sessions from this address (limits.max_sessions_per_ip=2)");
    BOOST_TEST(why.limit == "max_sessions_per_ip");
    BOOST_TEST(a.active() == 2u);
    BOOST_TEST(a.admit(v4(2), s, why));
    BOOST_TEST(!a.admit(v4(3), s, why, address_limits::balancer));  // and in the total
    BOOST_TEST(why.why == "too many sessions (limits.max_sessions=3)");
    BOOST_TEST(why.limit == "max_sessions");
    a.release(v4(1), address_limits::balancer);
    a.release(v4(2));
    BOOST_TEST(a.admit(v4(2), s, why));
    a.release(v4(2));
    BOOST_TEST(!a.admit(v4(2), s, why));  // a named client is still held to its window
    BOOST_TEST(why.why == "too many connections from this address (limits.max_connections_per_minute=2)");
    BOOST_TEST(why.limit == "max_connections_per_minute");
    BOOST_TEST(!a.admit(v4(1), s, why));  // the slow session counts against the address as a client
    BOOST_TEST(why.why == "too many slow sessions from this address (limits.max_slow_sessions_per_ip=1 in 10 minutes)");
    BOOST_TEST(why.limit == "max_slow_sessions_per_ip");
}

BOOST_AUTO_TEST_SUITE_END()
