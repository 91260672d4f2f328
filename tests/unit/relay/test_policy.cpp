// relay::policy, the one relay decision: every verdict it can give for a
// recipient, and the effects it records itself (the deny audit row, the
// grant hit). Refusals are tested as closely as grants: never an open relay.
#include "popgate/relay/grant_issuer.hpp"
#include "popgate/relay/policy.hpp"
#include "popgate/store/sqlite_store.hpp"

#include "temp_dir.hpp"
#include "test_backend.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

using namespace popgate;
using proto::relay_verdict;
namespace fs = std::filesystem;

namespace {

// A store of the backend under test (test_backend.hpp), or of SQLite.
template <test::backend B>
struct backend_policy_fixture {
    test::backend_db backend{B};
    fs::path const& tmp_path = backend.dir();
    std::unique_ptr<store::store> db = backend.open();
    std::optional<store::write_queue> writes{std::in_place, *db};
    relay::decider decider{*db, 64};
    relay::policy policy{decider, *db, *writes};
    config::settings s;

    backend_policy_fixture()
    {
        s.local_domains = {"gw.test", "localhost"};
        s.maildir = (tmp_path / "mail" / "%u").string();
        store::user_record u;
        u.name = "alice";
        u.password_hash = "$6$salt$0123456789abcdef";
        db->add_user(u);
        u.name = "bob@gw.test";
        db->add_user(u);
    }

    relay::verdict decide(std::string_view client, std::string_view local, std::string_view domain,
                          bool authenticated = false, bool auth_required = false,
                          relay::asker from = relay::asker::smtp_listener)
    {
        auto const a = net::parse_ip(client);
        BOOST_TEST_REQUIRE(a.has_value());
        std::string const address = domain.empty() ? std::string(local) : std::string(local) + "@" + std::string(domain);
        return policy.decide({*a, local, domain, address, authenticated, auth_required, false, true, from}, s);
    }

    // The question another MTA asks over the policy listener.
    relay::verdict mta_asks(std::string_view client, std::string_view local, std::string_view domain,
                            bool authenticated = false)
    {
        return decide(client, local, domain, authenticated, false, relay::asker::mta);
    }

    void grant(std::string const& address, store::unix_time ttl)
    {
        store::grant g;
        g.address = address;
        g.user = "alice";
        g.method = "pass";
        g.granted_at = store::now() - 100;
        g.expires_at = store::now() + ttl;
        db->upsert_grant(g);
    }

    // Everything the writer has queued, applied.
    void drain() { writes.reset(); }

    std::size_t audit_rows(std::string const& event)
    {
        std::size_t n = 0;
        for (auto const& e : db->list_audit(1000)) n += e.event == event ? 1 : 0;
        return n;
    }

    // A statement of an administrator's SQL shell on the same database.
    void sql(std::string const& text)
    {
        auto const msg = backend.shell()->exec(text);
        BOOST_TEST_REQUIRE(msg.empty(), text << " -> " << msg);
    }
};
struct policy_fixture : backend_policy_fixture<test::backend::under_test> {};
struct sqlite_policy_fixture : backend_policy_fixture<test::backend::sqlite> {};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(relay_one_decision, policy_fixture,
                         *boost::unit_test::label("unit") * boost::unit_test::label("both"))

BOOST_AUTO_TEST_CASE(local_recipient_gets_its_mailbox_whoever_asks)
{
    auto const v = decide("203.0.113.9", "alice", "GW.test");
    BOOST_TEST((v.what == relay_verdict::local));
    BOOST_TEST_REQUIRE(v.box.has_value());
    BOOST_TEST(v.box->user == "alice");
    BOOST_TEST(v.box->maildir == tmp_path / "mail" / "alice");
    // The full address names the user first.
    auto const b = decide("203.0.113.9", "bob", "gw.test");
    BOOST_TEST_REQUIRE(b.box.has_value());
    BOOST_TEST(b.box->user == "bob@gw.test");
}

BOOST_AUTO_TEST_CASE(unknown_local_user_has_no_mailbox)
{
    auto const v = decide("203.0.113.9", "nobody", "gw.test");
    BOOST_TEST((v.what == relay_verdict::local));
    BOOST_TEST(!v.box.has_value());
    BOOST_TEST(v.detail == "unknown-user");
}

BOOST_AUTO_TEST_CASE(postmaster_is_never_refused)
{
    auto const v = decide("203.0.113.9", "postmaster", "");
    BOOST_TEST((v.what == relay_verdict::local));
    BOOST_TEST_REQUIRE(v.box.has_value());
    BOOST_TEST(v.box->user == "postmaster");
}

BOOST_AUTO_TEST_CASE(stranger_is_denied_and_the_denial_audited)
{
    auto const v = decide("203.0.113.9", "x", "example.org");
    BOOST_TEST((v.what == relay_verdict::deny));
    BOOST_TEST(v.detail == "no-grant-or-network");
    drain();
    BOOST_TEST(audit_rows("deny") == 1u);
}

BOOST_AUTO_TEST_CASE(grant_relays_and_counts_a_hit)
{
    grant("203.0.113.9", 600);
    auto const v = decide("203.0.113.9", "x", "example.org");
    BOOST_TEST((v.what == relay_verdict::relay_grant));
    drain();
    auto const gs = db->list_grants(false, store::now());
    BOOST_TEST_REQUIRE(gs.size() == 1u);
    BOOST_TEST(gs[0].hits == 1);
    BOOST_TEST(audit_rows("deny") == 0u);
}

BOOST_AUTO_TEST_CASE(expired_grant_and_a_neighbour_are_denied)
{
    grant("203.0.113.9", -1);
    BOOST_TEST((decide("203.0.113.9", "x", "example.org").what == relay_verdict::deny));
    grant("203.0.113.10", 600);
    BOOST_TEST((decide("203.0.113.9", "x", "example.org").what == relay_verdict::deny));
}

BOOST_AUTO_TEST_CASE(network_relays)
{
    store::network n;
    n.cidr = "203.0.113.0/24";
    db->add_network(n);
    auto const v = decide("203.0.113.9", "x", "example.org");
    BOOST_TEST((v.what == relay_verdict::relay_network));
    BOOST_TEST(v.detail == "network=203.0.113.0/24");
    BOOST_TEST((decide("198.51.100.1", "x", "example.org").what == relay_verdict::deny));
}

BOOST_AUTO_TEST_CASE(auth_relays_and_auth_required_ignores_grants)
{
    grant("203.0.113.9", 600);
    BOOST_TEST((decide("198.51.100.1", "x", "example.org", true).what == relay_verdict::relay_auth));
    auto const v = decide("203.0.113.9", "x", "example.org", false, true);
    BOOST_TEST((v.what == relay_verdict::deny));
    BOOST_TEST(v.detail == "auth-required-on-listener");
    // Local mail is still accepted on such a listener.
    BOOST_TEST((decide("203.0.113.9", "alice", "gw.test", false, true).what == relay_verdict::local));
}


BOOST_AUTO_TEST_CASE(mta_asking_about_our_local_domain_gets_no_relay_from_it)
{
    // Postfix's own domains are Postfix's business: popgate's local domains
    // neither grant relay nor look up a mailbox when another MTA asks.
    auto const v = mta_asks("203.0.113.9", "alice", "gw.test");
    BOOST_TEST((v.what == relay_verdict::deny));
    BOOST_TEST(!v.box.has_value());
    BOOST_TEST((mta_asks("203.0.113.9", "postmaster", "").what == relay_verdict::deny));
}

BOOST_AUTO_TEST_CASE(mta_asking_gets_the_same_grants_networks_and_sasl)
{
    grant("203.0.113.9", 600);
    BOOST_TEST((mta_asks("203.0.113.9", "x", "example.org").what == relay_verdict::relay_grant));
    // A grant counts for any recipient, Postfix's own domains too (as permit_mynetworks).
    BOOST_TEST((mta_asks("203.0.113.9", "alice", "gw.test").what == relay_verdict::relay_grant));
    BOOST_TEST((mta_asks("203.0.113.10", "x", "example.org").what == relay_verdict::deny));
    BOOST_TEST((mta_asks("198.51.100.1", "x", "example.org", true).what == relay_verdict::relay_auth));
    store::network n;
    n.cidr = "2001:db8::/32";
    db->add_network(n);
    BOOST_TEST((mta_asks("2001:db8:1::7", "x", "example.org").what == relay_verdict::relay_network));
    BOOST_TEST((mta_asks("2001:db9::7", "x", "example.org").what == relay_verdict::deny));
    drain();
    auto const gs = db->list_grants(false, store::now());
    BOOST_TEST_REQUIRE(gs.size() == 1u);
    BOOST_TEST(gs[0].hits == 2);  // the hits are counted as at an RCPT
}

BOOST_AUTO_TEST_CASE(mta_asking_leaves_no_deny_row)
{
    // Most of what Postfix asks about is inbound mail to its own domains:
    // "no grant" there is no refusal, and must not flood the audit log.
    BOOST_TEST((mta_asks("203.0.113.9", "x", "example.org").what == relay_verdict::deny));
    drain();
    BOOST_TEST(audit_rows("deny") == 0u);
}


// Quotas: a message at the first recipient relayed on the grant in a
// transaction, a recipient at each; the refusal counts nothing and names the
// limit; an allowed network still relays; the count reaches the grant's row.
BOOST_AUTO_TEST_CASE(grant_quota_refuses_past_the_limit_and_counts_in_the_row)
{
    grant("203.0.113.9", 600);
    s.grant_max_messages_per_hour = 2;
    s.grant_max_recipients_per_hour = 3;
    auto const ask = [&](bool new_message) {
        auto const a = net::parse_ip("203.0.113.9");
        relay::request r{*a, "x", "example.org", "x@example.org", false, false, false, new_message};
        return policy.decide(r, s);
    };
    BOOST_TEST((ask(true).what == relay_verdict::relay_grant));   // message 1, recipient 1
    BOOST_TEST((ask(false).what == relay_verdict::relay_grant));  // recipient 2
    BOOST_TEST((ask(true).what == relay_verdict::relay_grant));   // message 2, recipient 3
    auto const m = ask(true);
    BOOST_TEST((m.what == relay_verdict::over_quota));
    BOOST_TEST(m.reason == "2 messages per hour");
    BOOST_TEST(m.detail == "grant_user=alice grant=203.0.113.9 quota=messages used=2 max=2");
    auto const r = ask(false);
    BOOST_TEST((r.what == relay_verdict::over_quota));
    BOOST_TEST(r.reason == "3 recipients per hour");
    drain();
    auto const gs = db->list_grants(false, store::now());
    BOOST_TEST_REQUIRE(gs.size() == 1u);
    BOOST_TEST(gs[0].quota_messages == 2);
    BOOST_TEST(gs[0].quota_recipients == 3);
    BOOST_TEST(gs[0].hits == 3);
    BOOST_TEST(audit_rows("deny") == 2u);
    // An allowed network relays for itself, without a quota.
    store::network n;
    n.cidr = "203.0.113.0/24";
    db->add_network(n);
    BOOST_TEST((ask(true).what == relay_verdict::relay_network));
}

BOOST_AUTO_TEST_CASE(grant_quota_starts_from_the_row_another_node_wrote)
{
    grant("203.0.113.9", 600);
    s.grant_max_messages_per_hour = 5;
    auto const now = store::now();
    sql("UPDATE relay_grants SET quota_hour = " + std::to_string(now - now % 3600) + ", quota_messages = 5");
    BOOST_TEST((decide("203.0.113.9", "x", "example.org").what == relay_verdict::over_quota));
}

BOOST_AUTO_TEST_SUITE_END()

// A store that fails under the decision (its table dropped): SQLite only, as
// the PostgreSQL run shares one database between the cases; the PostgreSQL
// server going away is tests/integration/test_pg_multinode.py's.
BOOST_FIXTURE_TEST_SUITE(relay_store_failure, sqlite_policy_fixture, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(unreadable_store_is_a_tempfail_never_a_relay)
{
    grant("203.0.113.9", 600);
    sql("DROP TABLE relay_grants");
    auto const v = decide("203.0.113.9", "x", "example.org");
    BOOST_TEST((v.what == relay_verdict::tempfail));
    BOOST_TEST(!v.detail.empty());
}

BOOST_AUTO_TEST_CASE(mta_asking_with_an_unreadable_store_gets_a_tempfail)
{
    sql("DROP TABLE relay_grants");
    BOOST_TEST((mta_asks("203.0.113.9", "x", "example.org").what == relay_verdict::tempfail));
}

BOOST_AUTO_TEST_SUITE_END()

// relay::grant_issuer: each guard rail, its reason, and what is written.
BOOST_FIXTURE_TEST_SUITE(grant_issuer_rules, policy_fixture,
                         *boost::unit_test::label("unit") * boost::unit_test::label("both"))

BOOST_AUTO_TEST_CASE(each_rule_refuses_with_its_reason)
{
    relay::grant_issuer issuer{decider, *db};
    relay::login_facts l{*net::parse_ip("100.64.1.2"), "alice", "pass", false, "pop3", true};
    BOOST_TEST(issuer.plan(l, s).log_fields.starts_with("grant=100.64.1.2 grant_until="));
    s.no_grant_networks = {*net::parse_cidr("100.64.0.0/10")};
    auto p = issuer.plan(l, s);
    BOOST_TEST((p.refused == relay::no_grant_reason::no_grant_network));
    BOOST_TEST(p.log_fields == "grant=no reason=no-grant-network network=100.64.0.0/10");
    BOOST_TEST_REQUIRE(p.ops.size() == 1u);  // the audit row only
    BOOST_TEST(std::get<store::audit_record>(p.ops[0]).event == "no-grant");
    l.listener_grants = false;
    BOOST_TEST(issuer.plan(l, s).log_fields == "grant=no reason=listener");
    // A proxy's header that named no client: the address is the proxy's.
    l = {*net::parse_ip("192.0.2.8"), "alice", "pass", true, "pop3", true, "pop3", false};
    p = issuer.plan(l, s);
    BOOST_TEST(p.log_fields == "grant=no reason=no-client-address");
    BOOST_TEST_REQUIRE(p.ops.size() == 1u);
    BOOST_TEST(std::get<store::audit_record>(p.ops[0]).detail.ends_with(" reason=no-client-address"));
    l = {*net::parse_ip("192.0.2.7"), "alice", "apop", false, "pop3", true};
    s.grant_requires_tls = true;
    BOOST_TEST(issuer.plan(l, s).log_fields == "grant=no reason=no-tls");
    l.tls = true;
    BOOST_TEST((issuer.plan(l, s).refused == relay::no_grant_reason::none));
}

BOOST_AUTO_TEST_CASE(max_grants_per_user_replaces_or_refuses)
{
    grant("192.0.2.1", 600);  // alice's, the oldest
    grant("192.0.2.2", 600);
    relay::grant_issuer issuer{decider, *db};
    relay::login_facts const l{*net::parse_ip("192.0.2.3"), "alice", "pass", false, "pop3", true};
    s.max_grants_per_user = 2;
    auto p = issuer.plan(l, s);
    BOOST_TEST((p.refused == relay::no_grant_reason::none));
    BOOST_TEST(p.replaced == std::vector<std::string>{"192.0.2.1"});
    std::vector<std::string> errors;
    db->write_batch(p.ops, errors);
    std::vector<std::string> left;
    for (auto const& g : db->active_grants_of_user("alice", store::now())) left.push_back(g.address);
    std::sort(left.begin(), left.end());
    BOOST_TEST(left == (std::vector<std::string>{"192.0.2.2", "192.0.2.3"}));
    // A refresh at a held address is no new grant.
    BOOST_TEST(issuer.plan(l, s).replaced.empty());
    s.grant_limit = config::grant_limit_action::refuse;
    relay::login_facts const other{*net::parse_ip("192.0.2.4"), "alice", "pass", false, "pop3", true};
    BOOST_TEST(issuer.plan(other, s).log_fields == "grant=no reason=max-grants-per-user held=2 max=2");
    BOOST_TEST((issuer.plan(l, s).refused == relay::no_grant_reason::none));
}

BOOST_AUTO_TEST_SUITE_END()
