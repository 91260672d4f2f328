#include "popgate/auth/failure_tracker.hpp"

#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

using namespace popgate;
using namespace std::chrono_literals;
using auth::block_scope;
constexpr auto known = auth::name_kind::known;
constexpr auto unknown = auth::name_kind::unknown;

namespace {
net::ip_address ip(char const* s) { return *net::parse_ip(s); }
auth::throttle_settings small()
{
    auth::throttle_settings s;
    s.window = 60s;
    s.max_failures_per_user = 3;
    s.max_failures_per_ip = 20;
    s.max_users_per_ip = 5;
    s.block_time = 30s;
    s.base_delay = 100ms;
    s.max_delay = 1000ms;
    return s;
}
auto const t0 = std::chrono::steady_clock::time_point{} + 1000s;
}  // namespace

BOOST_AUTO_TEST_SUITE(failure_tracker, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(delay_grows_with_the_names_failures_and_is_capped)
{
    auto s = small();
    s.max_failures_per_user = 100;
    auth::failure_tracker t(s);
    std::vector<long> delays;
    for (int i = 0; i < 6; ++i) delays.push_back(t.record_failure(ip("192.0.2.1"), "alice", known, t0).delay.count());
    BOOST_TEST(delays == (std::vector<long>{100, 200, 400, 800, 1000, 1000}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_name_at_an_address_is_blocked_and_nobody_else)
{
    auth::failure_tracker t(small());
    auto const office = ip("192.0.2.1");
    BOOST_TEST((t.record_failure(office, "bob", known, t0).now_blocked == block_scope::none));
    BOOST_TEST((t.record_failure(office, "bob", known, t0).now_blocked == block_scope::none));
    BOOST_TEST(!t.blocked(office, "bob", t0).has_value());
    BOOST_TEST((t.record_failure(office, "bob", known, t0).now_blocked == block_scope::user));
    auto const b = t.blocked(office, "bob", t0 + 10s);
    BOOST_TEST_REQUIRE(b.has_value());
    BOOST_TEST(b->left.count() == 20);
    BOOST_TEST((b->scope == block_scope::user));
    // Alice in the same office, and bob from home, are not refused.
    BOOST_TEST(!t.blocked(office, "alice", t0 + 10s).has_value());
    BOOST_TEST(!t.blocked(office, "", t0 + 10s).has_value());
    BOOST_TEST(!t.blocked(ip("198.51.100.9"), "bob", t0 + 10s).has_value());
    // ... and alice's first failure there waits only the base delay.
    BOOST_TEST(t.record_failure(office, "alice", known, t0 + 11s).delay.count() == 100);
    BOOST_TEST(!t.blocked(office, "bob", t0 + 31s).has_value());
}

BOOST_AUTO_TEST_CASE(one_phone_in_a_loop_never_locks_out_the_office)
{
    auto s = small();
    s.max_failures_per_user = 1000;  // even unblocked, a loop below the address ceiling
    auth::failure_tracker t(s);
    auto const office = ip("192.0.2.1");
    for (int i = 0; i < 19; ++i) t.record_failure(office, "bob", known, t0 + std::chrono::seconds(i));
    BOOST_TEST(!t.blocked(office, "alice", t0 + 20s).has_value());
    BOOST_TEST(!t.blocked(office, "carol", t0 + 20s).has_value());
}

BOOST_AUTO_TEST_CASE(the_address_is_blocked_at_its_ceiling)
{
    auto s = small();
    s.max_failures_per_user = 1000;
    auth::failure_tracker t(s);
    auto const a = ip("203.0.113.5");
    for (int i = 0; i < 19; ++i) BOOST_TEST((t.record_failure(a, "bob", known, t0).now_blocked == block_scope::none));
    BOOST_TEST((t.record_failure(a, "bob", known, t0).now_blocked == block_scope::address));
    auto const b = t.blocked(a, "alice", t0);
    BOOST_TEST_REQUIRE(b.has_value());
    BOOST_TEST((b->scope == block_scope::address));
    BOOST_TEST(t.blocked(a, "", t0).has_value());
    // A further failure while blocked does not report the block again.
    BOOST_TEST((t.record_failure(a, "bob", known, t0 + 1s).now_blocked == block_scope::none));
}

BOOST_AUTO_TEST_CASE(a_spray_of_names_blocks_the_address)
{
    auth::failure_tracker t(small());
    auto const a = ip("203.0.113.6");
    std::vector<block_scope> got;
    for (std::string name : {"a", "b", "c", "d", "e"})
        got.push_back(t.record_failure(a, name, unknown, t0).now_blocked);
    BOOST_TEST((got == std::vector<block_scope>{block_scope::none, block_scope::none, block_scope::none,
                                                 block_scope::none, block_scope::address}));
    BOOST_TEST(t.blocked(a, "alice", t0).has_value());
    BOOST_TEST(!t.blocked(ip("203.0.113.7"), "alice", t0).has_value());
}

BOOST_AUTO_TEST_CASE(real_users_each_failing_once_are_no_spray)
{
    // A campus NAT: many real users mistype once each. They count toward the
    // address ceiling (20 here), never toward the spray limit (5 names).
    auth::failure_tracker t(small());
    auto const campus = ip("198.51.100.1");
    for (int i = 0; i < 12; ++i) {
        auto const v = t.record_failure(campus, "user" + std::to_string(i), known, t0);
        BOOST_TEST((v.now_blocked == block_scope::none));
        BOOST_TEST(v.names == 0u);
        BOOST_TEST(v.delay.count() == 100);  // each name's first failure: the base delay, as an unknown name's
    }
    BOOST_TEST(!t.blocked(campus, "user12", t0).has_value());
    BOOST_TEST(!t.blocked(campus, "", t0).has_value());
    // Unknown names at the same address still make a spray, counted apart.
    for (std::string name : {"x1", "x2", "x3", "x4"})
        BOOST_TEST((t.record_failure(campus, name, unknown, t0).now_blocked == block_scope::none));
    // A known user's failure does not complete it...
    BOOST_TEST((t.record_failure(campus, "user0", known, t0).now_blocked == block_scope::none));
    // ...the fifth unknown name does.
    auto const v = t.record_failure(campus, "x5", unknown, t0);
    BOOST_TEST((v.now_blocked == block_scope::address));
    BOOST_TEST(v.names == 5u);
    BOOST_TEST(v.ip_count == 18u);
}

BOOST_AUTO_TEST_CASE(known_users_still_reach_the_address_ceiling)
{
    auto s = small();
    s.max_failures_per_user = 1000;
    auth::failure_tracker t(s);
    auto const a = ip("198.51.100.2");
    for (int i = 0; i < 19; ++i)
        BOOST_TEST((t.record_failure(a, "u" + std::to_string(i), known, t0).now_blocked == block_scope::none));
    BOOST_TEST((t.record_failure(a, "u19", known, t0).now_blocked == block_scope::address));
}

BOOST_AUTO_TEST_CASE(failures_outside_window_are_forgotten)
{
    auth::failure_tracker t(small());
    t.record_failure(ip("192.0.2.1"), "a", unknown, t0);
    t.record_failure(ip("192.0.2.1"), "a", unknown, t0 + 1s);
    auto v = t.record_failure(ip("192.0.2.1"), "a", unknown, t0 + 120s);
    BOOST_TEST(v.ip_count == 1u);
    BOOST_TEST(v.pair_count == 1u);
    BOOST_TEST(v.names == 1u);
    BOOST_TEST(v.delay.count() == 100);
    BOOST_TEST((v.now_blocked == block_scope::none));
    t.expire(t0 + 500s);
    BOOST_TEST(t.tracked() == 0u);
}

// A flood of failures from many addresses (a botnet's guesses) sweeps only
// what has left the window: the counts of a name at an address in the
// making are kept, so the flood cannot wipe them and buy more guesses.
BOOST_AUTO_TEST_CASE(a_flood_of_other_failures_does_not_reset_the_counts)
{
    auto s = small();
    s.max_failures_per_ip = 1000000;
    s.max_users_per_ip = 1000000;
    auth::failure_tracker t(s);
    auto const a = ip("192.0.2.1");
    BOOST_TEST((t.record_failure(a, "alice", known, t0).now_blocked == block_scope::none));
    BOOST_TEST((t.record_failure(a, "alice", known, t0).now_blocked == block_scope::none));
    for (std::uint32_t i = 0; i < 120000; ++i) {
        std::string const other = "10." + std::to_string(i >> 16 & 255) + "." + std::to_string(i >> 8 & 255) + "." +
                                  std::to_string(i & 255);
        t.record_failure(ip(other.c_str()), "guess" + std::to_string(i), unknown, t0 + 1s);
    }
    BOOST_TEST((t.record_failure(a, "alice", known, t0 + 2s).now_blocked == block_scope::user));
    // once the window (and the block) is over, all of it is forgotten
    t.expire(t0 + 200s);
    BOOST_TEST(t.tracked() == 0u);
}

BOOST_AUTO_TEST_CASE(checks_under_way_count_until_their_verdict)
{
    // Sessions checking one name in parallel: each check admitted counts as
    // a failure until it ends, so no more than max_failures_per_user (3)
    // are under way or failed at once; the fourth waits.
    auth::failure_tracker t(small());
    auto const nat = ip("192.0.2.9");
    std::vector<auth::failure_tracker::attempt> slots(4);
    for (int i = 0; i < 3; ++i) BOOST_TEST(!t.blocked(nat, "carol", t0, &slots[i]).has_value());
    auto const b = t.blocked(nat, "carol", t0, &slots[3]);
    BOOST_TEST_REQUIRE(b.has_value());
    BOOST_TEST((b->scope == block_scope::user));
    BOOST_TEST(b->busy);  // not a block: ask again when they end
    BOOST_TEST(b->left.count() >= 1);
    // Another name at the address, and the name elsewhere, are not held up.
    BOOST_TEST(!t.blocked(nat, "dave", t0, &slots[3]).has_value());
    slots[3] = {};
    BOOST_TEST(!t.blocked(ip("198.51.100.1"), "carol", t0, &slots[3]).has_value());
    slots[3] = {};
    // One check succeeds (released, nothing recorded): a slot is free again.
    slots[0] = {};
    BOOST_TEST(!t.blocked(nat, "carol", t0, &slots[0]).has_value());
    // All three fail: recorded, then released; the name is blocked as before.
    block_scope last = block_scope::none;
    for (int i = 0; i < 3; ++i) {
        last = t.record_failure(nat, "carol", known, t0).now_blocked;
        slots[i] = {};
    }
    BOOST_TEST((last == block_scope::user));
    BOOST_TEST(t.blocked(nat, "carol", t0 + 29s).has_value());
}

BOOST_AUTO_TEST_CASE(sequential_failures_reach_the_limit_one_check_at_a_time)
{
    // One client failing in turn: the check admitted before each failure is
    // released when it is recorded, so the last allowed check still runs.
    auth::failure_tracker t(small());
    auto const home = ip("192.0.2.10");
    for (int i = 0; i < 3; ++i) {
        auth::failure_tracker::attempt a;
        BOOST_TEST_REQUIRE(!t.blocked(home, "erin", t0, &a).has_value());
        t.record_failure(home, "erin", known, t0);
    }
    auth::failure_tracker::attempt a;
    auto const b = t.blocked(home, "erin", t0, &a);
    BOOST_TEST_REQUIRE(b.has_value());
    BOOST_TEST(!b->busy);  // the block the third failure set
}

BOOST_AUTO_TEST_CASE(after_a_block_one_check_at_a_time)
{
    // The block has ended, its failures are still in the window: one check
    // goes on (its failure would block again), a second beside it waits.
    auth::failure_tracker t(small());
    auto const home = ip("192.0.2.13");
    for (int i = 0; i < 3; ++i) t.record_failure(home, "fay", known, t0);
    BOOST_TEST(t.blocked(home, "fay", t0 + 29s).has_value());
    auto const later = t0 + 31s;  // block_time 30 s, window 60 s
    auth::failure_tracker::attempt first, second;
    BOOST_TEST(!t.blocked(home, "fay", later, &first).has_value());
    auto const b = t.blocked(home, "fay", later, &second);
    BOOST_TEST_REQUIRE(b.has_value());
    BOOST_TEST(b->busy);
    first = {};  // it succeeded
    BOOST_TEST(!t.blocked(home, "fay", later, &second).has_value());
}

BOOST_AUTO_TEST_CASE(the_address_ceiling_counts_checks_under_way)
{
    auto s = small();
    s.max_failures_per_ip = 4;
    s.max_failures_per_user = 100;
    auth::failure_tracker t(s);
    auto const nat = ip("192.0.2.11");
    std::vector<auth::failure_tracker::attempt> slots(5);
    for (int i = 0; i < 4; ++i)
        BOOST_TEST(!t.blocked(nat, "user" + std::to_string(i), t0, &slots[i]).has_value());
    auto const b = t.blocked(nat, "user9", t0, &slots[4]);
    BOOST_TEST_REQUIRE(b.has_value());
    BOOST_TEST((b->scope == block_scope::address));
    BOOST_TEST(b->busy);
}

BOOST_AUTO_TEST_CASE(names_no_user_can_have_share_one_count)
{
    // Over 255 octets or outside printable ASCII (the users table's CHECK):
    // counted under one key, so invented names cannot grow the maps, and
    // their failures add up toward that key's block at the address.
    auth::failure_tracker t(small());
    auto const a = ip("192.0.2.12");
    BOOST_TEST(&auth::failure_tracker::counted_name(std::string(256, 'x')) ==
               &auth::failure_tracker::counted_name("bad name"));
    std::string const ok(255, 'y');
    BOOST_TEST(auth::failure_tracker::counted_name(ok) == ok);
    auto const before = t.tracked();
    t.record_failure(a, std::string(4000, 'a'), unknown, t0);
    auto const one = t.tracked();
    t.record_failure(a, std::string(4000, 'b'), unknown, t0);
    BOOST_TEST(t.tracked() == one);
    BOOST_TEST(one > before);
    auto const v = t.record_failure(a, "tab\tname", unknown, t0);
    BOOST_TEST(v.pair_count == 3u);
    BOOST_TEST((v.now_blocked == block_scope::user));
    BOOST_TEST(t.blocked(a, std::string(300, 'z'), t0).has_value());
    BOOST_TEST(!t.blocked(a, "zoe", t0).has_value());
}

BOOST_AUTO_TEST_SUITE_END()
