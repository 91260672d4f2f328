#include "popgate/store/migrate.hpp"
#include "popgate/store/sqlite_store.hpp"

#include "temp_dir.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

using namespace popgate::store;
namespace fs = std::filesystem;
namespace bdata = boost::unit_test::data;

namespace {

using popgate::test::temp_dir;

// A second writer on the same file, as an administrator's sqlite3 shell would be.
class raw_db {
public:
    explicit raw_db(fs::path const& p)
    {
        int const rc = sqlite3_open(p.c_str(), &db_);
        if (rc != SQLITE_OK) BOOST_FAIL("sqlite3_open " << p << ": " << sqlite3_errstr(rc));
        sqlite3_busy_timeout(db_, 5000);
    }
    ~raw_db() { sqlite3_close(db_); }
    raw_db(raw_db const&) = delete;
    raw_db& operator=(raw_db const&) = delete;

    sqlite3* get() const noexcept { return db_; }

    // Empty string: success; else SQLite's message.
    std::string exec(std::string const& sql)
    {
        char* err = nullptr;
        int const rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
        std::string msg = rc == SQLITE_OK ? "" : (err ? err : sqlite3_errstr(rc));
        if (rc != SQLITE_OK && msg.empty()) msg = "error";
        sqlite3_free(err);
        return msg;
    }
    void must(std::string const& sql)
    {
        auto const e = exec(sql);
        BOOST_TEST_REQUIRE(e.empty(), sql << " -> " << e);
    }
    std::int64_t scalar(std::string const& sql)
    {
        sqlite3_stmt* s = nullptr;
        BOOST_TEST_REQUIRE(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK, sqlite3_errmsg(db_));
        std::int64_t v = -1;
        if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
    }
    std::vector<std::string> column(std::string const& sql)
    {
        sqlite3_stmt* s = nullptr;
        BOOST_TEST_REQUIRE(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK, sqlite3_errmsg(db_));
        std::vector<std::string> out;
        while (sqlite3_step(s) == SQLITE_ROW) {
            auto const* t = reinterpret_cast<char const*>(sqlite3_column_text(s, 0));
            out.emplace_back(t ? t : "NULL");
        }
        sqlite3_finalize(s);
        return out;
    }

private:
    sqlite3* db_ = nullptr;
};

// A store on a fresh database per test.
struct store_fixture {
    temp_dir tmp;
    fs::path file = tmp.path / "popgate.db";
    std::unique_ptr<store> db = open_sqlite_store(file);
};

// A valid hash shape for the users.password_hash CHECK (never verified here).
constexpr char const* some_hash = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

user_record user(std::string name)
{
    user_record u;
    u.name = std::move(name);
    u.password_hash = some_hash;
    return u;
}

grant make_grant(std::string address, std::string user_name, unix_time granted, unix_time expires)
{
    grant g;
    g.address = std::move(address);
    g.user = std::move(user_name);
    g.method = "pass";
    g.listener = "pop3";
    g.granted_at = granted;
    g.expires_at = expires;
    return g;
}

store_errc code_of(std::function<void()> const& f)
{
    try {
        f();
    } catch (store_error const& e) {
        return e.code();
    }
    BOOST_FAIL("no store_error thrown");
    return store_errc::not_found;
}

}  // namespace

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(store_migrate, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(latest_is_the_last_known_migration)
{
    auto const all = known_migrations();
    BOOST_TEST_REQUIRE(!all.empty());
    BOOST_TEST(latest_schema_version() == all.back().version);
    BOOST_TEST(all.front().version == 1);
    for (std::size_t i = 1; i < all.size(); ++i) BOOST_TEST(all[i].version > all[i - 1].version);
    for (auto const& m : all) BOOST_TEST(!m.sql.empty());
}

BOOST_AUTO_TEST_CASE(migrates_an_empty_database_once)
{
    temp_dir tmp;
    auto const file = tmp.path / "m.db";
    {
        raw_db raw(file);
        BOOST_TEST(current_schema_version(raw.get()) == 0);
        int const applied = migrate(raw.get());
        BOOST_TEST(applied == static_cast<int>(known_migrations().size()));
        BOOST_TEST(current_schema_version(raw.get()) == latest_schema_version());
        BOOST_TEST(raw.scalar("SELECT count(*) FROM sqlite_schema WHERE name = 'relay_grants'") == 1);
        BOOST_TEST(raw.scalar("SELECT count(*) FROM schema_migrations") ==
                   static_cast<std::int64_t>(known_migrations().size()));
    }
    {
        raw_db raw(file);
        BOOST_TEST(migrate(raw.get()) == 0);  // reopening applies nothing
        BOOST_TEST(current_schema_version(raw.get()) == latest_schema_version());
    }
}

BOOST_AUTO_TEST_CASE(migrate_up_to_a_target)
{
    temp_dir tmp;
    raw_db raw(tmp.path / "t.db");
    BOOST_TEST(migrate(raw.get(), 0) == 0);
    BOOST_TEST(current_schema_version(raw.get()) == 0);
    BOOST_TEST(migrate(raw.get(), 1) == 1);
    BOOST_TEST(current_schema_version(raw.get()) == 1);
}

BOOST_AUTO_TEST_CASE(store_open_migrates_and_reopen_keeps_data)
{
    temp_dir tmp;
    auto const file = tmp.path / "sub" / "dir" / "s.db";  // parent directories are made
    {
        auto db = open_sqlite_store(file);
        BOOST_TEST(db->schema_version() == latest_schema_version());
        db->add_user(user("alice"));
    }
    BOOST_TEST(fs::exists(file));
    // The database holds password hashes: not readable by others.
    BOOST_TEST(((fs::status(file).permissions() & fs::perms::others_read) == fs::perms::none));
    auto db = open_sqlite_store(file, {.migrate = false, .must_exist = true});
    BOOST_TEST(db->schema_version() == latest_schema_version());
    BOOST_TEST(db->find_user("alice").has_value());
    raw_db raw(file);
    BOOST_TEST(raw.scalar("SELECT count(*) FROM schema_migrations") ==
               static_cast<std::int64_t>(known_migrations().size()));
}

BOOST_AUTO_TEST_CASE(refuses_a_newer_schema)
{
    temp_dir tmp;
    auto const file = tmp.path / "new.db";
    open_sqlite_store(file).reset();
    {
        raw_db raw(file);
        raw.must("INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')");
    }
    for (bool const migrate_on_open : {true, false}) {
        try {
            open_sqlite_store(file, {.migrate = migrate_on_open});
            BOOST_ERROR("a database with schema 999 was opened, migrate=" << migrate_on_open);
        } catch (store_error const& e) {
            BOOST_TEST((e.code() == store_errc::schema_too_new));
            BOOST_TEST(std::string(e.what()).find("newer") != std::string::npos, e.what());
            BOOST_TEST(std::string(e.what()).find("999") != std::string::npos, e.what());
        }
    }
    raw_db raw(file);
    try {
        migrate(raw.get());
        BOOST_ERROR("migrate() accepted schema 999");
    } catch (store_error const& e) {
        BOOST_TEST((e.code() == store_errc::schema_too_new));
    }
}

BOOST_AUTO_TEST_CASE(old_schema_without_migrate_is_refused)
{
    temp_dir tmp;
    auto const file = tmp.path / "old.db";
    {
        raw_db raw(file);
        raw.must("CREATE TABLE unrelated (x INTEGER)");
    }
    try {
        open_sqlite_store(file, {.migrate = false});
        BOOST_ERROR("an unmigrated database was opened without migrating");
    } catch (store_error const& e) {
        BOOST_TEST((e.code() == store_errc::unavailable));
        BOOST_TEST(std::string(e.what()).find("migrate") != std::string::npos, e.what());
    }
}

BOOST_AUTO_TEST_CASE(must_exist_on_a_missing_file)
{
    temp_dir tmp;
    auto const file = tmp.path / "missing.db";
    try {
        open_sqlite_store(file, {.must_exist = true});
        BOOST_ERROR("a missing database was opened with must_exist");
    } catch (store_error const& e) {
        BOOST_TEST((e.code() == store_errc::unavailable));
        BOOST_TEST(std::string(e.what()).find("does not exist") != std::string::npos, e.what());
    }
    BOOST_TEST(!fs::exists(file));  // and it was not created by accident
}

BOOST_AUTO_TEST_CASE(integrity_ok_on_a_fresh_database)
{
    store_fixture f;
    BOOST_TEST(f.db->integrity_ok());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(store_users, store_fixture, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(add_find_update_delete)
{
    BOOST_TEST(!db->find_user("alice").has_value());
    auto u = user("alice");
    u.shared_secret = "tanstaaf";
    db->add_user(u);
    auto got = db->find_user("alice");
    BOOST_TEST_REQUIRE(got.has_value());
    BOOST_TEST(got->name == "alice");
    BOOST_TEST(got->password_hash.value_or("") == some_hash);
    BOOST_TEST(got->shared_secret.value_or("") == "tanstaaf");
    BOOST_TEST(!got->disabled);
    BOOST_TEST(!got->apop_only);
    BOOST_TEST(got->created_at > 0);
    BOOST_TEST(!db->find_user("Alice").has_value());  // names are case-sensitive
    BOOST_TEST(!db->find_user("alic").has_value());

    u.shared_secret.reset();
    u.password_hash = "$6$other$" + std::string(20, 'a');
    u.disabled = true;
    db->update_user(u);
    got = db->find_user("alice");
    BOOST_TEST_REQUIRE(got.has_value());
    BOOST_TEST(!got->shared_secret.has_value());
    BOOST_TEST(got->password_hash.value_or("") == *u.password_hash);
    BOOST_TEST(got->disabled);

    BOOST_TEST(db->delete_user("alice"));
    BOOST_TEST(!db->find_user("alice").has_value());
    BOOST_TEST(!db->delete_user("alice"));
}

BOOST_AUTO_TEST_CASE(duplicate_add_is_refused)
{
    db->add_user(user("bob"));
    try {
        db->add_user(user("bob"));
        BOOST_ERROR("duplicate user added");
    } catch (store_error const& e) {
        BOOST_TEST((e.code() == store_errc::duplicate));
        BOOST_TEST(std::string(e.what()).find("bob") != std::string::npos, e.what());
    }
    BOOST_TEST(db->list_users().size() == 1u);
}

BOOST_AUTO_TEST_CASE(update_of_missing_user_is_not_found)
{
    BOOST_TEST((code_of([&] { db->update_user(user("ghost")); }) == store_errc::not_found));
}

BOOST_AUTO_TEST_CASE(constraint_violations_are_constraint_errors)
{
    auto u = user("carol");
    u.password_hash = "plaintext";
    BOOST_TEST((code_of([&] { db->add_user(u); }) == store_errc::constraint));
    auto v = user("dave");
    v.apop_only = true;  // needs a shared secret
    BOOST_TEST((code_of([&] { db->add_user(v); }) == store_errc::constraint));
    BOOST_TEST((code_of([&] { db->add_user(user(".hidden")); }) == store_errc::constraint));
    BOOST_TEST((code_of([&] { db->add_user(user("a/b")); }) == store_errc::constraint));
    BOOST_TEST((code_of([&] { db->add_user(user("")); }) == store_errc::constraint));
    BOOST_TEST(db->list_users().empty());
}

BOOST_AUTO_TEST_CASE(list_is_sorted_by_name)
{
    for (auto const* n : {"zed", "amy", "mia"}) db->add_user(user(n));
    auto const all = db->list_users();
    BOOST_TEST_REQUIRE(all.size() == 3u);
    BOOST_TEST(all[0].name == "amy");
    BOOST_TEST(all[1].name == "mia");
    BOOST_TEST(all[2].name == "zed");
}

BOOST_AUTO_TEST_CASE(import_adds_all)
{
    std::vector<user_record> const batch{user("u1"), user("u2"), user("u3")};
    db->import_users(batch, false);
    BOOST_TEST(db->list_users().size() == 3u);
}

BOOST_AUTO_TEST_CASE(import_is_all_or_nothing_on_a_bad_row)
{
    auto bad = user("u2");
    bad.password_hash = "plaintext";
    std::vector<user_record> const batch{user("u1"), bad, user("u3")};
    try {
        db->import_users(batch, false);
        BOOST_ERROR("a batch with a bad row was imported");
    } catch (store_error const& e) {
        BOOST_TEST((e.code() == store_errc::constraint));
        BOOST_TEST(std::string(e.what()).find("u2") != std::string::npos, e.what());
    }
    BOOST_TEST(db->list_users().empty());
    BOOST_TEST(!db->find_user("u1").has_value());
    // The connection is usable afterwards (the transaction was rolled back).
    db->add_user(user("after"));
    BOOST_TEST(db->list_users().size() == 1u);
}

BOOST_AUTO_TEST_CASE(import_duplicate_without_replace_changes_nothing)
{
    auto old = user("u1");
    old.disabled = true;
    db->add_user(old);
    std::vector<user_record> const batch{user("u0"), user("u1")};
    BOOST_TEST((code_of([&] { db->import_users(batch, false); }) == store_errc::duplicate));
    BOOST_TEST(db->list_users().size() == 1u);
    BOOST_TEST(db->find_user("u1")->disabled);

    db->import_users(batch, true);  // replace overwrites
    BOOST_TEST(db->list_users().size() == 2u);
    BOOST_TEST(!db->find_user("u1")->disabled);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(store_grants, store_fixture, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(upsert_refreshes_one_row_per_address_and_keeps_hits)
{
    auto const t = now();
    db->upsert_grant(make_grant("192.0.2.7", "alice", t - 100, t + 100));
    db->touch_grant("192.0.2.7", t - 50);
    db->touch_grant("192.0.2.7", t - 40);
    auto g2 = make_grant("192.0.2.7", "bob", t, t + 1800);
    g2.method = "apop";
    g2.tls = true;
    db->upsert_grant(g2);
    auto const all = db->list_grants(true, t);
    BOOST_TEST_REQUIRE(all.size() == 1u);
    BOOST_TEST(all[0].user == "bob");
    BOOST_TEST(all[0].method == "apop");
    BOOST_TEST(all[0].tls);
    BOOST_TEST(all[0].granted_at == t);
    BOOST_TEST(all[0].expires_at == t + 1800);
    BOOST_TEST(all[0].hits == 2);
    BOOST_TEST(all[0].last_used.value_or(0) == t - 40);
}

BOOST_AUTO_TEST_CASE(find_active_grant_honours_expiry)
{
    auto const t = now();
    db->upsert_grant(make_grant("192.0.2.1", "a", t - 100, t + 100));
    db->upsert_grant(make_grant("192.0.2.2", "b", t - 100, t));       // expires exactly now
    db->upsert_grant(make_grant("192.0.2.3", "c", t - 100, t - 1));
    std::vector<std::string> const k1{"192.0.2.1"}, k2{"192.0.2.2"}, k3{"192.0.2.3"}, k4{"192.0.2.4"};
    auto const g = db->find_active_grant(k1, t);
    BOOST_TEST_REQUIRE(g.has_value());
    BOOST_TEST(g->user == "a");
    BOOST_TEST(!db->find_active_grant(k2, t).has_value());  // expires_at > now, strictly
    BOOST_TEST(db->find_active_grant(k2, t - 1).has_value());
    BOOST_TEST(!db->find_active_grant(k3, t).has_value());
    BOOST_TEST(!db->find_active_grant(k4, t).has_value());
    BOOST_TEST(!db->find_active_grant(k1, t + 100).has_value());
}

BOOST_AUTO_TEST_CASE(find_active_grant_tries_each_key_in_order)
{
    auto const t = now();
    db->upsert_grant(make_grant("2001:db8:1:2::5", "full", t, t + 100));
    db->upsert_grant(make_grant("2001:db8:1:2::", "prefix", t, t + 100));
    std::vector<std::string> const keys{"2001:db8:1:2::", "2001:db8:1:2::5"};
    auto g = db->find_active_grant(keys, t);
    BOOST_TEST_REQUIRE(g.has_value());
    BOOST_TEST(g->user == "prefix");
    BOOST_TEST(db->delete_grant("2001:db8:1:2::"));
    g = db->find_active_grant(keys, t);
    BOOST_TEST_REQUIRE(g.has_value());
    BOOST_TEST(g->user == "full");
    BOOST_TEST(!db->find_active_grant(std::vector<std::string>{}, t).has_value());
}

BOOST_AUTO_TEST_CASE(purge_and_list)
{
    auto const t = now();
    db->upsert_grant(make_grant("192.0.2.1", "a", t - 100, t + 100));
    db->upsert_grant(make_grant("192.0.2.2", "b", t - 100, t));
    db->upsert_grant(make_grant("192.0.2.3", "c", t - 100, t - 50));
    BOOST_TEST(db->list_grants(false, t).size() == 1u);
    BOOST_TEST(db->list_grants(true, t).size() == 3u);
    BOOST_TEST(db->purge_expired_grants(t) == 2u);
    auto const left = db->list_grants(true, t);
    BOOST_TEST_REQUIRE(left.size() == 1u);
    BOOST_TEST(left[0].address == "192.0.2.1");
    BOOST_TEST(db->purge_expired_grants(t) == 0u);
}

BOOST_AUTO_TEST_CASE(delete_grants_of_user)
{
    auto const t = now();
    db->upsert_grant(make_grant("192.0.2.1", "alice", t, t + 100));
    db->upsert_grant(make_grant("192.0.2.2", "alice", t, t + 100));
    db->upsert_grant(make_grant("192.0.2.3", "bob", t, t + 100));
    BOOST_TEST(db->delete_grants_of_user("alice") == 2u);
    BOOST_TEST(db->delete_grants_of_user("alice") == 0u);
    auto const left = db->list_grants(true, t);
    BOOST_TEST_REQUIRE(left.size() == 1u);
    BOOST_TEST(left[0].user == "bob");
    BOOST_TEST(!db->delete_grant("192.0.2.1"));
}

BOOST_AUTO_TEST_CASE(bad_grant_through_the_store_is_a_constraint_error)
{
    auto const t = now();
    BOOST_TEST((code_of([&] { db->upsert_grant(make_grant("192.0.2.300", "a", t, t + 1)); }) ==
                store_errc::constraint));
    BOOST_TEST((code_of([&] { db->upsert_grant(make_grant("192.0.2.1", "a", t, t)); }) == store_errc::constraint));
    BOOST_TEST(db->list_grants(true, t).empty());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(store_write_batch, store_fixture, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(applies_grants_touches_and_audits_in_order)
{
    auto const t = now();
    std::vector<write_op> ops;
    ops.emplace_back(make_grant("192.0.2.7", "alice", t, t + 600));
    ops.emplace_back(grant_touch{"192.0.2.7", t + 1});
    ops.emplace_back(grant_touch{"192.0.2.7", t + 2});
    ops.emplace_back(audit_record{"grant", "192.0.2.7", "alice", "pop3 mech=pass"});
    std::vector<std::string> errors{"stale"};
    db->write_batch(ops, errors);
    BOOST_TEST_REQUIRE(errors.size() == ops.size());
    for (auto const& e : errors) BOOST_TEST(e.empty(), e);
    auto const g = db->list_grants(false, t);
    BOOST_TEST_REQUIRE(g.size() == 1u);
    BOOST_TEST(g[0].user == "alice");
    BOOST_TEST(g[0].hits == 2);
    BOOST_TEST(g[0].last_used.value_or(0) == t + 2);
    auto const a = db->list_audit(10);
    BOOST_TEST_REQUIRE(a.size() == 1u);
    BOOST_TEST(a[0].detail == "pop3 mech=pass");
}

BOOST_AUTO_TEST_CASE(a_failed_op_is_undone_alone)
{
    auto const t = now();
    std::vector<write_op> ops;
    ops.emplace_back(make_grant("192.0.2.1", "a", t, t + 600));
    ops.emplace_back(make_grant("192.0.2.300", "bad", t, t + 600));  // address trigger refuses it
    ops.emplace_back(audit_record{"bogus", "", "", ""});              // event CHECK refuses it
    ops.emplace_back(make_grant("192.0.2.2", "b", t, t + 600));
    std::vector<std::string> errors;
    db->write_batch(ops, errors);
    BOOST_TEST_REQUIRE(errors.size() == 4u);
    BOOST_TEST(errors[0].empty());
    BOOST_TEST(errors[1].find("relay_grants.address") != std::string::npos, errors[1]);
    BOOST_TEST(!errors[2].empty());
    BOOST_TEST(errors[3].empty());
    auto const g = db->list_grants(true, t);
    BOOST_TEST_REQUIRE(g.size() == 2u);
    BOOST_TEST(db->list_audit(10).empty());
}

BOOST_AUTO_TEST_CASE(a_locked_database_fails_the_whole_batch)
{
    auto quick = open_sqlite_store(file, {.busy_timeout = std::chrono::milliseconds(50)});
    raw_db admin(file);
    admin.must("BEGIN IMMEDIATE");
    std::vector<write_op> ops;
    ops.emplace_back(make_grant("192.0.2.1", "a", now(), now() + 600));
    std::vector<std::string> errors;
    BOOST_TEST((code_of([&] { quick->write_batch(ops, errors); }) == store_errc::busy));
    admin.must("ROLLBACK");
    BOOST_TEST(db->list_grants(true, now()).empty());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(store_networks, store_fixture, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(add_list_duplicate_delete)
{
    network n;
    n.cidr = "192.0.2.0/24";
    n.note = "office";
    auto const id = db->add_network(n);
    BOOST_TEST(id > 0);
    network m;
    m.cidr = "2001:db8::/32";
    m.expires_at = now() + 3600;
    auto const id2 = db->add_network(m);
    BOOST_TEST(id2 != id);
    auto const all = db->list_networks();
    BOOST_TEST_REQUIRE(all.size() == 2u);
    BOOST_TEST(all[0].id == id);
    BOOST_TEST(all[0].cidr == "192.0.2.0/24");
    BOOST_TEST(all[0].note == "office");
    BOOST_TEST(!all[0].expires_at.has_value());
    BOOST_TEST(all[1].expires_at.value_or(0) == *m.expires_at);

    try {
        db->add_network(n);
        BOOST_ERROR("duplicate network added");
    } catch (store_error const& e) {
        BOOST_TEST((e.code() == store_errc::duplicate));
        BOOST_TEST(std::string(e.what()).find("192.0.2.0/24") != std::string::npos, e.what());
    }
    BOOST_TEST(db->delete_network("192.0.2.0/24"));
    BOOST_TEST(!db->delete_network("192.0.2.0/24"));
    BOOST_TEST(db->list_networks().size() == 1u);
}

BOOST_AUTO_TEST_CASE(bad_cidr_through_the_store_is_a_constraint_error)
{
    network n;
    n.cidr = "10.0.0.0/33";
    BOOST_TEST((code_of([&] { db->add_network(n); }) == store_errc::constraint));
    BOOST_TEST(db->list_networks().empty());
}

BOOST_AUTO_TEST_CASE(generation_moves_on_every_change_by_any_writer)
{
    auto g = db->network_generation();
    BOOST_TEST(g >= 0);
    network n;
    n.cidr = "10.0.0.0/8";
    db->add_network(n);
    auto const g1 = db->network_generation();
    BOOST_TEST(g1 != g);

    raw_db raw(file);
    raw.must("INSERT INTO allowed_networks (cidr) VALUES ('172.16.0.0/12')");
    auto const g2 = db->network_generation();
    BOOST_TEST(g2 != g1);

    raw.must("UPDATE allowed_networks SET note = 'changed' WHERE cidr = '10.0.0.0/8'");
    auto const g3 = db->network_generation();
    BOOST_TEST(g3 != g2);

    raw.must("DELETE FROM allowed_networks WHERE cidr = '172.16.0.0/12'");
    auto const g4 = db->network_generation();
    BOOST_TEST(g4 != g3);

    BOOST_TEST(db->delete_network("10.0.0.0/8"));
    auto const g5 = db->network_generation();
    BOOST_TEST(g5 != g4);

    // Reading does not move it; neither do other tables.
    (void)db->list_networks();
    db->upsert_grant(make_grant("192.0.2.1", "a", now(), now() + 10));
    BOOST_TEST(db->network_generation() == g5);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// Rows written by hand with the sqlite3 shell: the schema refuses malformed ones
// with a message that says why (sql/README.md).
BOOST_FIXTURE_TEST_SUITE(store_sql_constraints, store_fixture, *boost::unit_test::label("unit"))

struct sql_case {
    std::string_view what;
    std::string_view sql;
    std::string_view message;  // a part of SQLite's error message; "" = must succeed
};
std::ostream& operator<<(std::ostream& os, sql_case const& c) { return os << c.what; }

sql_case const sql_cases[]{
    // relay_grants.address
    {"grant 256.1.1.1", "INSERT INTO relay_grants (address, expires_at) VALUES ('256.1.1.1', unixepoch() + 60)",
     "relay_grants.address"},
    {"grant 1.2.3.256", "INSERT INTO relay_grants (address, expires_at) VALUES ('1.2.3.256', unixepoch() + 60)",
     "relay_grants.address"},
    {"grant 01.2.3.4", "INSERT INTO relay_grants (address, expires_at) VALUES ('01.2.3.4', unixepoch() + 60)",
     "relay_grants.address"},
    {"grant 1.2.3", "INSERT INTO relay_grants (address, expires_at) VALUES ('1.2.3', unixepoch() + 60)",
     "relay_grants.address"},
    {"grant 1.2.3.4.", "INSERT INTO relay_grants (address, expires_at) VALUES ('1.2.3.4.', unixepoch() + 60)",
     "relay_grants.address"},
    {"grant uppercase IPv6",
     "INSERT INTO relay_grants (address, expires_at) VALUES ('2001:DB8::1', unixepoch() + 60)",
     "relay_grants.address"},
    {"grant mapped IPv6",
     "INSERT INTO relay_grants (address, expires_at) VALUES ('::ffff:1.2.3.4', unixepoch() + 60)",
     "relay_grants.address"},
    {"grant with prefix",
     "INSERT INTO relay_grants (address, expires_at) VALUES ('2001:db8::/64', unixepoch() + 60)",
     "relay_grants.address"},
    {"grant 1::2::3", "INSERT INTO relay_grants (address, expires_at) VALUES ('1::2::3', unixepoch() + 60)",
     "relay_grants.address"},
    {"grant 12345::", "INSERT INTO relay_grants (address, expires_at) VALUES ('12345::', unixepoch() + 60)",
     "relay_grants.address"},
    {"grant empty", "INSERT INTO relay_grants (address, expires_at) VALUES ('', unixepoch() + 60)",
     "relay_grants.address"},
    {"grant address updated to garbage",
     "INSERT INTO relay_grants (address, expires_at) VALUES ('192.0.2.9', unixepoch() + 60);"
     " UPDATE relay_grants SET address = 'x' WHERE address = '192.0.2.9'",
     "relay_grants.address"},
    {"grant expires before granted",
     "INSERT INTO relay_grants (address, granted_at, expires_at) VALUES ('192.0.2.7', 1000, 999)",
     "relay_grants.expires_at"},
    {"grant expires when granted",
     "INSERT INTO relay_grants (address, granted_at, expires_at) VALUES ('192.0.2.7', 1000, 1000)",
     "relay_grants.expires_at"},
    {"grant method bogus",
     "INSERT INTO relay_grants (address, method, expires_at) VALUES ('192.0.2.7', 'bogus', unixepoch() + 60)",
     "relay_grants.method"},
    {"grant method sasl-", "INSERT INTO relay_grants (address, method, expires_at) VALUES ('192.0.2.7', 'sasl-',"
                           " unixepoch() + 60)",
     "relay_grants.method"},
    {"grant tls 2", "INSERT INTO relay_grants (address, tls, expires_at) VALUES ('192.0.2.7', 2, unixepoch() + 60)",
     "relay_grants.tls"},
    {"grant negative hits",
     "INSERT INTO relay_grants (address, hits, expires_at) VALUES ('192.0.2.7', -1, unixepoch() + 60)",
     "relay_grants.hits"},
    {"grant without expiry", "INSERT INTO relay_grants (address) VALUES ('192.0.2.7')", "NOT NULL"},
    // allowed_networks.cidr
    {"network /33", "INSERT INTO allowed_networks (cidr) VALUES ('10.0.0.0/33')", "allowed_networks.cidr"},
    {"network 10.0.0/8", "INSERT INTO allowed_networks (cidr) VALUES ('10.0.0/8')", "allowed_networks.cidr"},
    {"network x", "INSERT INTO allowed_networks (cidr) VALUES ('x')", "allowed_networks.cidr"},
    {"network /129", "INSERT INTO allowed_networks (cidr) VALUES ('2001:db8::/129')", "allowed_networks.cidr"},
    {"network /08", "INSERT INTO allowed_networks (cidr) VALUES ('10.0.0.0/08')", "allowed_networks.cidr"},
    {"network empty prefix", "INSERT INTO allowed_networks (cidr) VALUES ('10.0.0.0/')", "allowed_networks.cidr"},
    {"network negative prefix", "INSERT INTO allowed_networks (cidr) VALUES ('10.0.0.0/-1')",
     "allowed_networks.cidr"},
    {"network uppercase IPv6", "INSERT INTO allowed_networks (cidr) VALUES ('2001:DB8::/32')",
     "allowed_networks.cidr"},
    {"network updated to garbage",
     "INSERT INTO allowed_networks (cidr) VALUES ('10.9.0.0/16');"
     " UPDATE allowed_networks SET cidr = '10.9.0.0/99' WHERE cidr = '10.9.0.0/16'",
     "allowed_networks.cidr"},
    {"network expires before created",
     "INSERT INTO allowed_networks (cidr, created_at, expires_at) VALUES ('10.0.0.0/8', 1000, 10)",
     "allowed_networks.expires_at"},
    // users
    {"user plaintext password", "INSERT INTO users (name, password_hash) VALUES ('eve', 'plaintext')",
     "users.password_hash"},
    {"user short $ hash", "INSERT INTO users (name, password_hash) VALUES ('eve', '$1$abc')", "users.password_hash"},
    {"user name with space", "INSERT INTO users (name) VALUES ('e ve')", "users.name"},
    {"user apop-only without secret", "INSERT INTO users (name, apop_only) VALUES ('eve', 1)", "users.apop_only"},
    {"user disabled 2", "INSERT INTO users (name, disabled) VALUES ('eve', 2)", "users.disabled"},
    {"audit event bogus", "INSERT INTO audit_log (event) VALUES ('bogus')", "audit_log.event"},
    // valid rows are accepted
    {"ok grant IPv4", "INSERT INTO relay_grants (address, expires_at) VALUES ('192.0.2.7', unixepoch() + 60)", ""},
    {"ok grant 0.0.0.0", "INSERT INTO relay_grants (address, expires_at) VALUES ('0.0.0.0', unixepoch() + 60)", ""},
    {"ok grant 255.255.255.255",
     "INSERT INTO relay_grants (address, expires_at) VALUES ('255.255.255.255', unixepoch() + 60)", ""},
    {"ok grant IPv6", "INSERT INTO relay_grants (address, expires_at) VALUES ('2001:db8::1', unixepoch() + 60)", ""},
    {"ok grant IPv6 /64 key",
     "INSERT INTO relay_grants (address, expires_at) VALUES ('2001:db8:1:2::', unixepoch() + 60)", ""},
    {"ok grant ::1", "INSERT INTO relay_grants (address, expires_at) VALUES ('::1', unixepoch() + 60)", ""},
    {"ok grant full IPv6",
     "INSERT INTO relay_grants (address, expires_at) VALUES ('2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff',"
     " unixepoch() + 60)",
     ""},
    {"ok grant sasl-cram-md5 method",
     "INSERT INTO relay_grants (address, method, expires_at) VALUES ('192.0.2.8', 'sasl-cram-md5', unixepoch() + 60)",
     ""},
    {"ok network IPv4", "INSERT INTO allowed_networks (cidr) VALUES ('10.0.0.0/8')", ""},
    {"ok network host", "INSERT INTO allowed_networks (cidr) VALUES ('192.0.2.7')", ""},
    {"ok network /0", "INSERT INTO allowed_networks (cidr) VALUES ('0.0.0.0/0')", ""},
    {"ok network /32", "INSERT INTO allowed_networks (cidr) VALUES ('192.0.2.7/32')", ""},
    {"ok network IPv6", "INSERT INTO allowed_networks (cidr) VALUES ('2001:db8::/32')", ""},
    {"ok network IPv6 /128", "INSERT INTO allowed_networks (cidr) VALUES ('2001:db8::1/128')", ""},
    {"ok user hash", "INSERT INTO users (name, password_hash) VALUES ('eve', '$6$saltsalt$abcdefghijk')", ""},
    {"ok user no password", "INSERT INTO users (name, shared_secret, apop_only) VALUES ('eve', 's', 1)", ""},
};

BOOST_DATA_TEST_CASE(hand_written_rows, bdata::make(sql_cases), c)
{
    raw_db raw(file);
    auto const err = raw.exec(std::string(c.sql));
    if (c.message.empty()) {
        BOOST_TEST(err.empty(), err);
    } else {
        BOOST_TEST(!err.empty(), "accepted: " << c.sql);
        BOOST_TEST(err.find(c.message) != std::string::npos, err);
    }
}

BOOST_AUTO_TEST_CASE(refused_rows_are_not_stored)
{
    raw_db raw(file);
    BOOST_TEST(!raw.exec("INSERT INTO relay_grants (address, expires_at) VALUES ('256.1.1.1', unixepoch() + 60)")
                    .empty());
    BOOST_TEST(!raw.exec("INSERT INTO allowed_networks (cidr) VALUES ('x')").empty());
    BOOST_TEST(raw.scalar("SELECT count(*) FROM relay_grants") == 0);
    BOOST_TEST(raw.scalar("SELECT count(*) FROM allowed_networks") == 0);
    BOOST_TEST(db->list_networks().empty());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(store_relay_clients_view, store_fixture, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(lists_unexpired_grants_and_networks)
{
    auto const t = now();
    db->upsert_grant(make_grant("192.0.2.1", "alice", t - 10, t + 600));
    db->upsert_grant(make_grant("2001:db8:1:2::", "bob", t - 10, t + 600));
    db->upsert_grant(make_grant("192.0.2.2", "old", t - 600, t - 10));  // expired
    for (auto const* c : {"10.0.0.0/8", "192.0.2.7/32", "2001:db8::1/128", "2001:db8:5::/48", "198.51.100.9"}) {
        network n;
        n.cidr = c;
        db->add_network(n);
    }
    raw_db raw(file);
    raw.must("INSERT INTO allowed_networks (cidr, created_at, expires_at)"
             " VALUES ('172.16.0.0/12', unixepoch() - 600, unixepoch() - 10)");  // expired
    raw.must("INSERT INTO allowed_networks (cidr, created_at, expires_at)"
             " VALUES ('172.31.0.0/16', unixepoch() - 600, unixepoch() + 600)");

    auto got = raw.column("SELECT client || ' ' || source || ' ' || coalesce(user, '-') FROM relay_clients");
    std::sort(got.begin(), got.end());
    std::vector<std::string> const want{
        "10.0.0.0/8 network -",          //
        "172.31.0.0/16 network -",       //
        "192.0.2.1 grant alice",         //
        "192.0.2.7 network -",           // a host network as the bare address
        "198.51.100.9 network -",        //
        "2001:db8:1:2:: grant bob",      //
        "2001:db8:5::/48 network -",     //
        "2001:db8::1 network -",         //
    };
    BOOST_TEST(got == want, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(store_audit, store_fixture, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(insert_and_list_newest_first)
{
    db->audit("grant", "192.0.2.7", "alice", "ttl=1800");
    db->audit("deny", "192.0.2.8", "", "rcpt=x@example.org");
    db->audit("admin", "", "root", "user add");
    auto const all = db->list_audit(10);
    BOOST_TEST_REQUIRE(all.size() == 3u);
    BOOST_TEST(all[0].event == "admin");
    BOOST_TEST(all[0].user == "root");
    BOOST_TEST(all[1].event == "deny");
    BOOST_TEST(all[1].address == "192.0.2.8");
    BOOST_TEST(all[2].event == "grant");
    BOOST_TEST(all[2].detail == "ttl=1800");
    BOOST_TEST(all[2].at > 0);
    BOOST_TEST(all[0].id > all[1].id);
    BOOST_TEST(db->list_audit(2).size() == 2u);
    BOOST_TEST(db->list_audit(0).empty());
}

BOOST_AUTO_TEST_CASE(unknown_event_is_refused)
{
    BOOST_TEST((code_of([&] { db->audit("bogus", "", "", ""); }) == store_errc::constraint));
    BOOST_TEST(db->list_audit(10).empty());
}

BOOST_AUTO_TEST_CASE(purge_keeps_at_most_keep_rows)
{
    for (int i = 0; i < 10; ++i) db->audit("deny", "192.0.2." + std::to_string(i + 1), "", "");
    BOOST_TEST(db->purge_audit(1000, 0) == 0u);
    BOOST_TEST(db->purge_audit(4, 0) == 6u);
    auto const left = db->list_audit(100);
    BOOST_TEST_REQUIRE(left.size() == 4u);
    BOOST_TEST(left[0].address == "192.0.2.10");  // the newest are kept
    BOOST_TEST(left[3].address == "192.0.2.7");
    BOOST_TEST(db->purge_audit(4, 0) == 0u);
    BOOST_TEST(db->purge_audit(0, 0) == 4u);
    BOOST_TEST(db->list_audit(100).empty());
    BOOST_TEST(db->purge_audit(0, 0) == 0u);  // an empty table
}

BOOST_AUTO_TEST_CASE(purge_drops_old_rows)
{
    db->audit("grant", "192.0.2.1", "a", "");
    db->audit("grant", "192.0.2.2", "b", "");
    db->audit("grant", "192.0.2.3", "c", "");
    raw_db raw(file);
    raw.must("UPDATE audit_log SET at = unixepoch() - 100 * 86400 WHERE address = '192.0.2.1'");
    BOOST_TEST(db->purge_audit(1000, now() - 90 * 86400) == 1u);
    auto const left = db->list_audit(10);
    BOOST_TEST_REQUIRE(left.size() == 2u);
    BOOST_TEST(left[1].address == "192.0.2.2");
}

BOOST_AUTO_TEST_SUITE_END()
