#include "popgate/server/admission.hpp"

#include <boost/test/unit_test.hpp>

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

BOOST_AUTO_TEST_SUITE_END()
