#include "popgate/proto/policy.hpp"
#include "popgate/relay/decider.hpp"
#include "popgate/store/migrate.hpp"
#include "popgate/store/sqlite_store.hpp"

#include "temp_dir.hpp"
#include "test_backend.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>

using namespace popgate;
using proto::relay_facts;
using proto::relay_verdict;
namespace fs = std::filesystem;
namespace bdata = boost::unit_test::data;

namespace {

using popgate::test::temp_dir;

net::ip_address ip(std::string_view text)
{
    auto a = net::parse_ip(text);
    BOOST_TEST_REQUIRE(a.has_value(), "test address does not parse: " << text);
    return *a;
}

// The daemon's store on a fresh database of the backend under test (or
// SQLite), the decider over it, and a second connection standing in for an
// administrator's SQL shell (test_backend.hpp).
template <test::backend B>
struct backend_decider_fixture {
    test::backend_db backend{B};
    std::unique_ptr<store::store> db = backend.open();
    relay::decider decider{*db, 64};
    std::unique_ptr<test::sql_shell> shell = backend.shell();

    void sql(std::string const& text)
    {
        auto const msg = shell->exec(text);
        BOOST_TEST_REQUIRE(msg.empty(), text << " -> " << msg);
    }

    void grant_for(std::string const& address, std::string const& user, store::unix_time ttl)
    {
        auto const t = store::now();
        store::grant g;
        g.address = address;
        g.user = user;
        g.method = "pass";
        g.granted_at = ttl > 0 ? t : t + ttl - 10;
        g.expires_at = t + ttl;
        db->upsert_grant(g);
    }

    static void sql_on(fs::path const& f, std::string const& text)
    {
        sqlite3* other = nullptr;
        BOOST_TEST_REQUIRE(sqlite3_open(f.c_str(), &other) == SQLITE_OK);
        sqlite3_busy_timeout(other, 5000);
        char* err = nullptr;
        int const rc = sqlite3_exec(other, text.c_str(), nullptr, nullptr, &err);
        std::string const msg = err ? err : "";
        sqlite3_free(err);
        sqlite3_close(other);
        BOOST_TEST_REQUIRE(rc == SQLITE_OK, text << " -> " << msg);
    }

    relay::decision decide(std::string_view client, bool authenticated = false, bool auth_required = false)
    {
        return decider.decide(ip(client), authenticated, auth_required);
    }
};
struct decider_fixture : backend_decider_fixture<test::backend::under_test> {};
struct sqlite_decider_fixture : backend_decider_fixture<test::backend::sqlite> {};

}  // namespace

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(relay_policy, *boost::unit_test::label("unit"))

struct policy_case {
    bool local, authenticated, auth_required, grant, network;
    relay_verdict verdict;
};
std::ostream& operator<<(std::ostream& os, policy_case const& c)
{
    return os << "local=" << c.local << " auth=" << c.authenticated << " auth_required=" << c.auth_required
              << " grant=" << c.grant << " network=" << c.network << " -> " << proto::to_string(c.verdict);
}

using enum relay_verdict;
constexpr policy_case policy_cases[]{
    // local domain first, whatever else holds (even on a submission port, unauthenticated)
    {true, false, false, false, false, local},
    {true, true, true, true, true, local},
    {true, false, true, false, false, local},
    {true, false, false, true, true, local},
    // SMTP AUTH relays on any listener
    {false, true, false, false, false, relay_auth},
    {false, true, true, false, false, relay_auth},
    {false, true, false, true, true, relay_auth},
    {false, true, true, true, true, relay_auth},
    // auth_required: grants and networks do not count
    {false, false, true, true, false, deny},
    {false, false, true, false, true, deny},
    {false, false, true, true, true, deny},
    {false, false, true, false, false, deny},
    // grant before network
    {false, false, false, true, false, relay_grant},
    {false, false, false, true, true, relay_grant},
    {false, false, false, false, true, relay_network},
    // nothing
    {false, false, false, false, false, deny},
};

BOOST_DATA_TEST_CASE(truth_table, bdata::make(policy_cases), c)
{
    relay_facts f;
    f.local_domain = c.local;
    f.authenticated = c.authenticated;
    f.auth_required = c.auth_required;
    f.has_grant = c.grant;
    f.in_network = c.network;
    BOOST_TEST((proto::decide_relay(f) == c.verdict));
}

BOOST_AUTO_TEST_CASE(invariants_over_all_combinations)
{
    // The safety rules, over all 64 combinations of facts.
    for (unsigned bits = 0; bits < 64; ++bits) {
        relay_facts f{bool(bits & 1), bool(bits & 2), bool(bits & 4), bool(bits & 8), bool(bits & 16),
                      bool(bits & 32)};
        auto const v = proto::decide_relay(f);
        // Local delivery, but on a submission listener that says so only after AUTH.
        if (f.local_domain && (!f.local_needs_auth || f.authenticated)) BOOST_TEST((v == local), "bits=" << bits);
        if (f.local_domain && f.local_needs_auth && !f.authenticated) BOOST_TEST((v == deny), "bits=" << bits);
        // Never a relay for an unauthenticated client on a submission port.
        if (!f.local_domain && f.auth_required && !f.authenticated) BOOST_TEST((v == deny), "bits=" << bits);
        // Never a relay without some reason.
        if (!f.local_domain && !f.authenticated && !f.has_grant && !f.in_network)
            BOOST_TEST((v == deny), "bits=" << bits);
    }
}

BOOST_AUTO_TEST_CASE(verdict_names)
{
    BOOST_TEST(proto::to_string(local) == "local");
    BOOST_TEST(proto::to_string(relay_auth) == "auth");
    BOOST_TEST(proto::to_string(relay_grant) == "grant");
    BOOST_TEST(proto::to_string(relay_network) == "network");
    BOOST_TEST(proto::to_string(deny) == "denied");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(relay_decider, decider_fixture,
                         *boost::unit_test::label("unit") * boost::unit_test::label("both"))

BOOST_AUTO_TEST_CASE(no_rows_deny)
{
    auto const d = decide("192.0.2.7");
    BOOST_TEST((d.verdict == relay_verdict::deny));
    BOOST_TEST(d.grant_address.empty());
    BOOST_TEST(!d.detail.empty());
    BOOST_TEST((decide("2001:db8::1").verdict == relay_verdict::deny));
}

BOOST_AUTO_TEST_CASE(grant_for_the_address_relays)
{
    grant_for("192.0.2.7", "alice", 600);
    auto const d = decide("192.0.2.7");
    BOOST_TEST((d.verdict == relay_verdict::relay_grant));
    BOOST_TEST(d.grant_address == "192.0.2.7");
    BOOST_TEST(d.detail.find("alice") != std::string::npos, d.detail);
    // The IPv4-mapped form of the same client is the same client.
    auto const m = decide("::ffff:192.0.2.7");
    BOOST_TEST((m.verdict == relay_verdict::relay_grant));
    BOOST_TEST(m.grant_address == "192.0.2.7");
}

BOOST_AUTO_TEST_CASE(expired_grant_denies)
{
    grant_for("192.0.2.7", "alice", -1);
    BOOST_TEST((decide("192.0.2.7").verdict == relay_verdict::deny));
}

BOOST_AUTO_TEST_CASE(grant_for_another_address_denies)
{
    grant_for("192.0.2.7", "alice", 600);
    BOOST_TEST((decide("192.0.2.8").verdict == relay_verdict::deny));
    BOOST_TEST((decide("192.0.2.70").verdict == relay_verdict::deny));
    BOOST_TEST((decide("::ffff:192.0.2.8").verdict == relay_verdict::deny));
}

BOOST_AUTO_TEST_CASE(grant_deleted_by_hand_is_seen_at_once)
{
    grant_for("192.0.2.7", "alice", 600);
    BOOST_TEST((decide("192.0.2.7").verdict == relay_verdict::relay_grant));
    sql("DELETE FROM relay_grants WHERE address = '192.0.2.7'");
    BOOST_TEST((decide("192.0.2.7").verdict == relay_verdict::deny));
}

BOOST_AUTO_TEST_CASE(ipv6_client_matched_by_its_64)
{
    grant_for("2001:db8:1:2::", "bob", 600);
    auto const d = decide("2001:db8:1:2::5");
    BOOST_TEST((d.verdict == relay_verdict::relay_grant));
    BOOST_TEST(d.grant_address == "2001:db8:1:2::");
    BOOST_TEST((decide("2001:db8:1:2:aaaa:bbbb:cccc:dddd").verdict == relay_verdict::relay_grant));
    BOOST_TEST((decide("2001:db8:1:3::5").verdict == relay_verdict::deny));
}

BOOST_AUTO_TEST_CASE(ipv6_client_matched_by_its_full_address)
{
    sql("INSERT INTO relay_grants (address, \"user\", expires_at)"
        " VALUES ('2001:db8:1:2::5', 'carol', unixepoch() + 600)");
    auto const d = decide("2001:db8:1:2::5");
    BOOST_TEST((d.verdict == relay_verdict::relay_grant));
    BOOST_TEST(d.grant_address == "2001:db8:1:2::5");
    BOOST_TEST((decide("2001:db8:1:2::6").verdict == relay_verdict::deny));
}

BOOST_AUTO_TEST_CASE(grant_keys_of_a_client)
{
    auto const v6 = decider.grant_keys(ip("2001:db8:1:2::5"));
    BOOST_TEST_REQUIRE(v6.size() == 2u);
    BOOST_TEST(v6[0] == "2001:db8:1:2::");
    BOOST_TEST(v6[1] == "2001:db8:1:2::5");
    auto const v4 = decider.grant_keys(ip("192.0.2.7"));
    BOOST_TEST_REQUIRE(v4.size() == 1u);
    BOOST_TEST(v4[0] == "192.0.2.7");
    decider.set_ipv6_prefix(128);
    auto const full = decider.grant_keys(ip("2001:db8:1:2::5"));
    BOOST_TEST_REQUIRE(full.size() == 1u);
    BOOST_TEST(full[0] == "2001:db8:1:2::5");
    decider.set_ipv6_prefix(48);
    BOOST_TEST(decider.grant_keys(ip("2001:db8:1:2::5"))[0] == "2001:db8:1::");
}

BOOST_AUTO_TEST_CASE(authenticated_and_auth_required)
{
    grant_for("192.0.2.7", "alice", 600);
    sql("INSERT INTO allowed_networks (cidr) VALUES ('198.51.100.0/24')");
    BOOST_TEST((decide("203.0.113.1", true).verdict == relay_verdict::relay_auth));
    BOOST_TEST((decide("203.0.113.1", true, true).verdict == relay_verdict::relay_auth));
    // A submission port ignores grants and networks.
    auto const d = decide("192.0.2.7", false, true);
    BOOST_TEST((d.verdict == relay_verdict::deny));
    BOOST_TEST(d.grant_address.empty());
    BOOST_TEST(d.detail.find("auth") != std::string::npos, d.detail);
    BOOST_TEST((decide("198.51.100.1", false, true).verdict == relay_verdict::deny));
    BOOST_TEST((decide("198.51.100.1").verdict == relay_verdict::relay_network));
}

BOOST_AUTO_TEST_CASE(network_row_added_by_hand_is_seen_at_the_next_decision)
{
    BOOST_TEST((decide("198.51.100.9").verdict == relay_verdict::deny));  // loads (and caches) no networks
    sql("INSERT INTO allowed_networks (cidr, note) VALUES ('198.51.100.0/24', 'by hand')");
    auto const d = decide("198.51.100.9");
    BOOST_TEST((d.verdict == relay_verdict::relay_network));
    BOOST_TEST(d.detail.find("198.51.100.0/24") != std::string::npos, d.detail);
    BOOST_TEST(d.grant_address.empty());
    // ... and a deletion likewise.
    sql("DELETE FROM allowed_networks WHERE cidr = '198.51.100.0/24'");
    BOOST_TEST((decide("198.51.100.9").verdict == relay_verdict::deny));
    // ... and an update.
    sql("INSERT INTO allowed_networks (cidr) VALUES ('10.0.0.0/8')");
    BOOST_TEST((decide("10.1.2.3").verdict == relay_verdict::relay_network));
    sql("UPDATE allowed_networks SET cidr = '11.0.0.0/8' WHERE cidr = '10.0.0.0/8'");
    BOOST_TEST((decide("10.1.2.3").verdict == relay_verdict::deny));
    BOOST_TEST((decide("11.1.2.3").verdict == relay_verdict::relay_network));
}

// The daemon's store: on PostgreSQL it keeps the network generation that a
// LISTEN connection hears. A row changed by hand must still count at the very
// next decision, before the notification has arrived: a deleted network that
// went on relaying would be an open relay.
BOOST_AUTO_TEST_CASE(network_rows_by_hand_count_at_once_beside_the_watcher)
{
    auto watched = backend.open({.watch_networks = true});
    relay::decider d{*watched, 64};
    int wrong = 0;
    for (int i = 0; i < 100; ++i) {
        sql("INSERT INTO allowed_networks (cidr) VALUES ('198.51.100.0/24')");
        wrong += d.decide(ip("198.51.100.9"), false, false).verdict != relay_verdict::relay_network;
        sql("DELETE FROM allowed_networks");
        wrong += d.decide(ip("198.51.100.9"), false, false).verdict != relay_verdict::deny;
    }
    BOOST_TEST(wrong == 0);
}

BOOST_AUTO_TEST_CASE(network_added_through_the_store)
{
    BOOST_TEST((decide("2001:db8:ff::1").verdict == relay_verdict::deny));
    store::network n;
    n.cidr = "2001:db8::/32";
    db->add_network(n);
    BOOST_TEST((decide("2001:db8:ff::1").verdict == relay_verdict::relay_network));
    BOOST_TEST((decide("2001:db9::1").verdict == relay_verdict::deny));
    BOOST_TEST((decide("192.0.2.1").verdict == relay_verdict::deny));
}

BOOST_AUTO_TEST_CASE(an_unnamed_client_relays_by_auth_only)
{
    // A trusted proxy's own address, left by a PROXY header that named no
    // client: its grant and its network stand for no one in particular.
    store::network n;
    n.cidr = "192.0.2.0/24";
    db->add_network(n);
    grant_for("192.0.2.7", "monitor", 600);
    auto const unnamed = [&](bool authenticated) {
        return decider.decide(ip("192.0.2.7"), authenticated, false, false, false, {}, false);
    };
    auto const d = unnamed(false);
    BOOST_TEST((d.verdict == relay_verdict::deny));
    BOOST_TEST(d.detail == "client-unnamed");
    BOOST_TEST((unnamed(true).verdict == relay_verdict::relay_auth));
    // A local domain is still delivered to.
    BOOST_TEST((decider.decide(ip("192.0.2.7"), false, false, true, false, {}, false).verdict == relay_verdict::local));
    // The same address, named, relays by its grant.
    BOOST_TEST((decide("192.0.2.7").verdict == relay_verdict::relay_grant));
}

BOOST_AUTO_TEST_CASE(grant_wins_over_network)
{
    sql("INSERT INTO allowed_networks (cidr) VALUES ('192.0.2.0/24')");
    grant_for("192.0.2.7", "alice", 600);
    auto const d = decide("192.0.2.7");
    BOOST_TEST((d.verdict == relay_verdict::relay_grant));
    BOOST_TEST((decide("192.0.2.8").verdict == relay_verdict::relay_network));
}

BOOST_AUTO_TEST_CASE(expired_network_denies)
{
    sql("INSERT INTO allowed_networks (cidr, created_at, expires_at)"
        " VALUES ('198.51.100.0/24', unixepoch() - 600, unixepoch() - 1)");
    BOOST_TEST((decide("198.51.100.9").verdict == relay_verdict::deny));
    sql("INSERT INTO allowed_networks (cidr, created_at, expires_at)"
        " VALUES ('203.0.113.0/24', unixepoch() - 600, unixepoch() + 600)");
    BOOST_TEST((decide("203.0.113.9").verdict == relay_verdict::relay_network));
}

BOOST_AUTO_TEST_CASE(network_written_by_hand_matches_by_its_prefix)
{
    // Host bits (192.0.2.5/24) are refused since schema 3: the canonical row.
    sql("INSERT INTO allowed_networks (cidr) VALUES ('192.0.2.0/24')");
    auto const d = decide("192.0.2.200");
    BOOST_TEST((d.verdict == relay_verdict::relay_network));
    BOOST_TEST(d.detail.find("192.0.2.0/24") != std::string::npos, d.detail);  // the row as written
    BOOST_TEST((decide("192.0.3.5").verdict == relay_verdict::deny));
}



BOOST_AUTO_TEST_SUITE_END()

// Rows the SQLite schema's triggers refuse, written past them (dropped
// triggers, an older schema): PostgreSQL's inet and cidr types cannot hold them.
BOOST_FIXTURE_TEST_SUITE(relay_decider_sqlite_rows, sqlite_decider_fixture, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(unreadable_network_row_is_ignored_not_an_open_relay)
{
    // No address: ignored with a warning. Schema 3 refuses it; a row from an
    // older schema (or written with the triggers dropped) may still be there.
    sql("DROP TRIGGER allowed_networks_cidr_ipv6_groups_insert");
    sql("INSERT INTO allowed_networks (cidr) VALUES ('1:2:3/0')");
    sql("INSERT INTO allowed_networks (cidr) VALUES ('198.51.100.0/24')");
    BOOST_TEST((decide("203.0.113.9").verdict == relay_verdict::deny));
    BOOST_TEST((decide("2001:db8::1").verdict == relay_verdict::deny));
    BOOST_TEST((decide("198.51.100.1").verdict == relay_verdict::relay_network));
}

// Rows from before schema 3 that its rules refuse: the decisions never use
// them wider than written, and each is reported once, with what to write,
// however often the networks are reloaded and the rows checked.
BOOST_AUTO_TEST_CASE(rows_from_before_schema_3_are_reported_once)
{
    auto const old_file = backend.dir() / "v2.db";
    {
        sqlite3* v2 = nullptr;
        BOOST_TEST_REQUIRE(sqlite3_open(old_file.c_str(), &v2) == SQLITE_OK);
        BOOST_TEST_REQUIRE(store::migrate(v2, 2) == 2);
        char* err = nullptr;
        int const rc = sqlite3_exec(
            v2,
            "INSERT INTO relay_grants (address, user, expires_at) VALUES ('0::1', 'zero', unixepoch() + 600),"
            " ('::ffff:7f00:3', 'mapped', unixepoch() + 600), ('2001:db8:1:2::', 'fine', unixepoch() + 600);"
            " INSERT INTO allowed_networks (cidr) VALUES ('127.0.7.9/16'), ('2001:0db8::/32'), ('10.0.0.0/8')",
            nullptr, nullptr, &err);
        std::string const msg = err ? err : "";
        sqlite3_free(err);
        sqlite3_close(v2);
        BOOST_TEST_REQUIRE(rc == SQLITE_OK, msg);
    }
    auto old_db = store::open_sqlite_store(old_file);  // migrates to the latest schema, rows kept
    relay::decider d{*old_db, 64};

    std::ostringstream log;
    auto const previous = spdlog::default_logger();
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::ostream_sink_mt>(log)));
    struct restore {
        std::shared_ptr<spdlog::logger> p;
        ~restore() { spdlog::set_default_logger(p); }
    } const restore_logger{previous};

    d.check_rows();
    auto const decide_old = [&](std::string_view client) { return d.decide(ip(client), false, false).verdict; };
    // Host bits: ignored, not widened to 127.0.0.0/16.
    BOOST_TEST((decide_old("127.0.7.9") == relay_verdict::deny));
    BOOST_TEST((decide_old("127.0.0.1") == relay_verdict::deny));
    // Another spelling of a network: used as what it means.
    BOOST_TEST((decide_old("2001:db8:ff::1") == relay_verdict::relay_network));
    // Grants are looked up by the canonical text: these never match.
    BOOST_TEST((decide_old("::1") == relay_verdict::deny));
    BOOST_TEST((decide_old("127.0.0.3") == relay_verdict::deny));
    BOOST_TEST((decide_old("2001:db8:1:2::9") == relay_verdict::relay_grant));
    // Again, with the network list reloaded (a new row bumps the generation).
    old_db->add_network({0, "198.51.100.0/24", "", 0, std::nullopt});
    BOOST_TEST((decide_old("198.51.100.1") == relay_verdict::relay_network));
    d.check_rows();
    d.check_rows();

    auto const text = log.str();
    auto const count = [&](std::string_view needle) {
        std::size_t n = 0;
        for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
        return n;
    };
    BOOST_TEST(count("cidr=127.0.7.9/16 problem=\"ignored: host bits set in '127.0.7.9/16'; write the network "
                     "127.0.0.0/16, or 127.0.7.9/32 for one address") == 1u, text);
    BOOST_TEST(count("cidr=2001:0db8::/32 problem=\"used as 2001:db8::/32: ") == 1u, text);
    BOOST_TEST(count("; write 2001:db8::/32") == 1u, text);
    BOOST_TEST(count("relay_grants address=0::1 never matches problem=") == 1u, text);
    BOOST_TEST(count("; write ::1") == 1u, text);
    BOOST_TEST(count("relay_grants address=::ffff:7f00:3 never matches problem=\"IPv4-mapped IPv6 '::ffff:7f00:3' is not "
                     "accepted; write the IPv4 address 127.0.0.3") == 1u, text);
    BOOST_TEST(count("[warning]") == 4u, text);  // nothing about the canonical rows

    // A row fixed as the warning says is used at once, and a row broken again
    // is reported again.
    sql_on(old_file, "UPDATE relay_grants SET address = '::1' WHERE address = '0::1'");
    BOOST_TEST((decide_old("::1") == relay_verdict::relay_grant));
    d.check_rows();
    BOOST_TEST(count("never matches") == 2u, log.str());
}

BOOST_AUTO_TEST_SUITE_END()
