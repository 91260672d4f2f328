#include "popgate/net/ip.hpp"
#include "popgate/store/migrate.hpp"
#include "popgate/store/sqlite_store.hpp"
#include "../../../src/store/pg_util.hpp"  // white box: the PostgreSQL connection

#include "temp_dir.hpp"
#include "test_backend.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <regex>
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
    // One statement with `value` bound to ?1. Empty string: success; else SQLite's message.
    std::string exec_with(std::string const& sql, std::string_view value)
    {
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) return sqlite3_errmsg(db_);
        sqlite3_bind_text(s, 1, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
        int const rc = sqlite3_step(s);
        std::string msg = rc == SQLITE_DONE ? "" : sqlite3_errmsg(db_);
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE && msg.empty()) msg = "error";
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

// A store on a fresh database of the backend under test (SQLite, or
// PostgreSQL in unit.store_pg: test_backend.hpp), and an administrator's
// shell on it. Suites with this fixture are labelled "both".
struct both_fixture {
    popgate::test::backend_db backend;
    std::unique_ptr<store> db = backend.open();
    std::unique_ptr<popgate::test::sql_shell> sql = backend.shell();
    bool pg() const noexcept { return backend.postgresql(); }
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

void apply_ops(store& db, std::vector<write_op> const& ops)
{
    std::vector<std::string> errors;
    db.write_batch(ops, errors);
    for (auto const& e : errors) BOOST_TEST(e.empty(), e);
}

grant the_grant(store& db, std::string const& address)
{
    for (auto const& g : db.list_grants(true, 0))
        if (g.address == address) return g;
    BOOST_FAIL("no grant for " << address);
    return {};
}

std::vector<std::string> addresses(std::vector<grant> const& gs)
{
    std::vector<std::string> out;
    for (auto const& g : gs) out.push_back(g.address);
    return out;
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

// Schema 4 widens relay_grants.method for Dovecot logins in place: rows of
// schema 3 stay, another connection open during the migration (an
// administrator's sqlite3 shell) sees the new rule at its next statement,
// and anything else is still refused.
BOOST_AUTO_TEST_CASE(schema_4_accepts_dovecot_grant_methods_only)
{
    temp_dir tmp;
    auto const file = tmp.path / "d.db";
    raw_db before(file);
    BOOST_TEST_REQUIRE(migrate(before.get(), 3) == 3);
    auto const grant_with = [](std::string_view addr, std::string_view method) {
        return "INSERT INTO relay_grants (address, method, expires_at) VALUES ('" + std::string(addr) + "', '" +
               std::string(method) + "', unixepoch() + 600)";
    };
    BOOST_TEST(before.exec(grant_with("192.0.2.1", "pass")).empty());
    BOOST_TEST(before.exec(grant_with("192.0.2.2", "dovecot-pop3")).find("relay_grants.method") != std::string::npos);
    raw_db shell(file);
    BOOST_TEST(shell.scalar("SELECT count(*) FROM relay_grants") == 1);  // schema read before the migration
    BOOST_TEST(migrate(before.get()) == latest_schema_version() - 3);
    for (auto const m : {"dovecot-pop3", "dovecot-imap"}) {
        auto const addr = std::string(m) == "dovecot-pop3" ? "192.0.2.2" : "192.0.2.3";
        BOOST_TEST(shell.exec(grant_with(addr, m)).empty(), m);
    }
    for (auto const m : {"dovecot-smtp", "dovecot-", "Dovecot-imap", "imap"})
        BOOST_TEST(shell.exec(grant_with("192.0.2.9", m)).find("relay_grants.method: one of") != std::string::npos, m);
    BOOST_TEST(shell.exec(grant_with("192.0.2.256", "dovecot-imap")).find("0 to 255") != std::string::npos);
    BOOST_TEST(shell.scalar("SELECT count(*) FROM relay_grants") == 3);
    BOOST_TEST(shell.scalar("SELECT count(*) FROM pragma_integrity_check WHERE integrity_check = 'ok'") == 1);
    BOOST_TEST(shell.scalar("SELECT count(*) FROM sqlite_schema WHERE name LIKE 'migration_004%'") == 0);
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

// Opening such a database: store_schema/a_newer_schema_is_refused.
BOOST_AUTO_TEST_CASE(migrate_refuses_a_newer_schema)
{
    temp_dir tmp;
    auto const file = tmp.path / "new.db";
    open_sqlite_store(file).reset();
    raw_db raw(file);
    raw.must("INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')");
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


BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
namespace {
bool on_postgresql(boost::unit_test::test_unit_id)
{
    return !popgate::test::pg_test_dir().empty();
}
}  // namespace

// The client-side answer limit (the statement timeout + 1 s) counts per
// statement, as the server's statement_timeout does: three statements of
// 0.7 s each under a 1 s timeout are each legal, together 2.1 s, past one
// 2 s limit (the server sends their results together at the end).
BOOST_AUTO_TEST_CASE(pg_answer_limit_is_per_statement, *boost::unit_test::label("unit") *
                                                            boost::unit_test::label("both") *
                                                            boost::unit_test::precondition(on_postgresql))
{
    popgate::test::backend_db backend;
    popgate::store::pg::connection c(backend.database(), std::chrono::milliseconds(1000));
    BOOST_CHECK_NO_THROW(c.exec("SELECT pg_sleep(0.7); SELECT pg_sleep(0.7); SELECT pg_sleep(0.7)"));
    BOOST_TEST(!c.broken());
    BOOST_TEST(c.run("SELECT 1").i64(0, 0) == 1);
    // One statement past the server's timeout is its error, not ours.
    BOOST_CHECK_THROW(c.exec("SELECT pg_sleep(1.5)"), store_error);
    BOOST_TEST(!c.timed_out());
}

// A commit answered for is on disk: with the server's synchronous_commit =
// off (the test server's own setting), popgate's sessions ask for the local
// flush, and a stronger setting is kept (a review lost two answered grants
// to pg_ctl stop -m immediate with the server's off).
BOOST_AUTO_TEST_CASE(pg_sessions_commit_to_disk, *boost::unit_test::label("unit") *
                                                     boost::unit_test::label("both") *
                                                     boost::unit_test::precondition(on_postgresql))
{
    popgate::test::backend_db backend;
    {
        popgate::store::pg::connection plain(backend.database(), std::chrono::milliseconds(1000));
        plain.exec("ALTER DATABASE " + plain.run("SELECT quote_ident(current_database())").text(0, 0) +
                   " SET synchronous_commit = off");
    }
    popgate::store::pg::connection c(backend.database(), std::chrono::milliseconds(1000));
    BOOST_TEST(c.run("SHOW synchronous_commit").text(0, 0) == "local");
    {
        popgate::store::pg::connection plain(backend.database(), std::chrono::milliseconds(1000));
        plain.exec("ALTER DATABASE " + plain.run("SELECT quote_ident(current_database())").text(0, 0) +
                   " SET synchronous_commit = remote_apply");
    }
    popgate::store::pg::connection strong(backend.database(), std::chrono::milliseconds(1000));
    BOOST_TEST(strong.run("SHOW synchronous_commit").text(0, 0) == "remote_apply");
}

BOOST_FIXTURE_TEST_SUITE(store_users, both_fixture, *boost::unit_test::label("unit") * boost::unit_test::label("both"))

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
BOOST_FIXTURE_TEST_SUITE(store_grants, both_fixture, *boost::unit_test::label("unit") * boost::unit_test::label("both"))

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
BOOST_FIXTURE_TEST_SUITE(store_write_batch, both_fixture, *boost::unit_test::label("unit") * boost::unit_test::label("both"))

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

// A login's grant (needs_user) is written, with its audit row, only while
// its user exists and is not disabled; a grant refused so leaves neither.
BOOST_AUTO_TEST_CASE(a_logins_grant_needs_a_user_who_can_log_in)
{
    auto const t = now();
    db->add_user(user("alice"));
    auto off = user("carol");
    off.disabled = true;
    db->add_user(off);
    auto const login_grant = [&](std::string address, std::string name) {
        auto g = make_grant(std::move(address), std::move(name), t, t + 600);
        g.needs_user = true;
        g.audit_address = g.address;
        g.audit_detail = "pop3 mech=pass";
        return g;
    };
    std::vector<write_op> ops;
    ops.emplace_back(login_grant("192.0.2.11", "alice"));
    ops.emplace_back(login_grant("192.0.2.12", "carol"));   // disabled
    ops.emplace_back(login_grant("192.0.2.13", "nobody"));  // deleted, or renamed
    auto by_hand = make_grant("192.0.2.14", "nobody", t, t + 600);  // not a login: no such check
    ops.emplace_back(by_hand);
    std::vector<std::string> errors;
    db->write_batch(ops, errors);
    BOOST_TEST_REQUIRE(errors.size() == 4u);
    BOOST_TEST(errors[0].empty(), errors[0]);
    BOOST_TEST(errors[1].find("'carol' was disabled or deleted") != std::string::npos, errors[1]);
    BOOST_TEST(errors[2].find("'nobody' was disabled or deleted") != std::string::npos, errors[2]);
    BOOST_TEST(errors[3].empty(), errors[3]);
    auto const g = db->list_grants(true, t);
    BOOST_TEST_REQUIRE(g.size() == 2u);
    BOOST_TEST(g[0].address == "192.0.2.11");
    BOOST_TEST(g[1].address == "192.0.2.14");
    auto const a = db->list_audit(10);
    BOOST_TEST_REQUIRE(a.size() == 1u);
    BOOST_TEST(a[0].event == "grant");
    BOOST_TEST(a[0].address == "192.0.2.11");
    BOOST_TEST(a[0].user == "alice");
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
    // SQLite's rule names the column; PostgreSQL's inet type refuses the text.
    BOOST_TEST(errors[1].find(pg() ? "inet" : "relay_grants.address") != std::string::npos, errors[1]);
    BOOST_TEST(!errors[2].empty());
    BOOST_TEST(errors[3].empty());
    auto const g = db->list_grants(true, t);
    BOOST_TEST_REQUIRE(g.size() == 2u);
    BOOST_TEST(db->list_audit(10).empty());
}


BOOST_AUTO_TEST_SUITE_END()

// SQLite's own lock wait (busy timeout, deadline): SQLite only.
BOOST_FIXTURE_TEST_SUITE(store_write_deadline, store_fixture, *boost::unit_test::label("unit"))

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

BOOST_AUTO_TEST_CASE(a_locked_database_is_waited_for_until_the_deadline_not_the_busy_timeout)
{
    auto slow = open_sqlite_store(file, {.busy_timeout = std::chrono::milliseconds(60000)});
    raw_db admin(file);
    admin.must("BEGIN IMMEDIATE");
    std::vector<write_op> ops;
    ops.emplace_back(make_grant("192.0.2.1", "a", now(), now() + 600));
    std::vector<std::string> errors;
    auto const start = std::chrono::steady_clock::now();
    BOOST_TEST((code_of([&] { slow->write_batch(ops, errors, start + std::chrono::milliseconds(300)); }) ==
                store_errc::busy));
    auto const waited = std::chrono::steady_clock::now() - start;
    BOOST_TEST(waited >= std::chrono::milliseconds(290));
    BOOST_TEST(waited < std::chrono::seconds(10));  // far below the 60 s busy timeout
    admin.must("ROLLBACK");
    // The connection's own busy timeout is back for the next call.
    slow->write_batch(ops, errors);
    BOOST_TEST(db->list_grants(true, now()).size() == 1u);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// The database file deleted or replaced under an open store: every call
// fails until the file is back or the store reopens what the path names.
BOOST_AUTO_TEST_SUITE(store_file_identity, *boost::unit_test::label("unit"))

namespace {
// Checks the file at every call, as a write always does.
sqlite_options const every_call{.file_check_interval = std::chrono::milliseconds(0)};

void expect_moved(std::function<void()> const& f, std::string_view what)
{
    try {
        f();
        BOOST_ERROR("a call on a moved database file succeeded");
    } catch (store_error const& e) {
        BOOST_TEST((e.code() == store_errc::unavailable));
        BOOST_TEST(std::string(e.what()).find(what) != std::string::npos, e.what());
    }
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_deleted_file_fails_reads_and_writes_until_it_is_back)
{
    temp_dir tmp;
    auto const file = tmp.path / "popgate.db";
    auto db = open_sqlite_store(file, every_call);
    db->add_user(user("alice"));
    fs::rename(file, tmp.path / "aside.db");
    expect_moved([&] { db->find_user("alice"); }, "was deleted");
    expect_moved([&] { db->upsert_grant(make_grant("192.0.2.7", "alice", now(), now() + 600)); }, "was deleted");
    std::vector<write_op> ops;
    ops.emplace_back(make_grant("192.0.2.8", "alice", now(), now() + 600));
    std::vector<std::string> errors;
    expect_moved([&] { db->write_batch(ops, errors); }, "was deleted");
    fs::rename(tmp.path / "aside.db", file);
    BOOST_TEST(db->find_user("alice").has_value());
    db->write_batch(ops, errors);
    BOOST_TEST(db->reopen_if_moved() == false);  // nothing to reopen
    raw_db raw(file);
    BOOST_TEST(raw.column("SELECT address FROM relay_grants") == std::vector<std::string>{"192.0.2.8"});
}

BOOST_AUTO_TEST_CASE(a_replaced_file_fails_until_reopened_then_the_new_one_is_used)
{
    temp_dir tmp;
    auto const file = tmp.path / "popgate.db";
    auto db = open_sqlite_store(file, every_call);
    db->add_user(user("alice"));
    auto const other = tmp.path / "other.db";
    open_sqlite_store(other)->add_user(user("bob"));  // closed: its WAL is folded in
    // An administrator's replacement: the file and its WAL companions go.
    fs::remove(fs::path(file.string() + "-wal"));
    fs::remove(fs::path(file.string() + "-shm"));
    fs::rename(other, file);
    expect_moved([&] { db->find_user("alice"); }, "was replaced");
    expect_moved([&] { db->delete_grant("192.0.2.7"); }, "was replaced");
    BOOST_TEST(db->reopen_if_moved() == true);
    BOOST_TEST(!db->find_user("alice").has_value());
    BOOST_TEST(db->find_user("bob").has_value());
    db->upsert_grant(make_grant("192.0.2.7", "bob", now(), now() + 600));
    raw_db raw(file);
    BOOST_TEST(raw.column("SELECT user FROM relay_grants") == std::vector<std::string>{"bob"});
}

BOOST_AUTO_TEST_CASE(reads_check_at_most_every_interval_writes_always)
{
    temp_dir tmp;
    auto const file = tmp.path / "popgate.db";
    auto db = open_sqlite_store(file, {.file_check_interval = std::chrono::hours(1)});
    db->add_user(user("alice"));
    fs::rename(file, tmp.path / "aside.db");
    BOOST_TEST(db->find_user("alice").has_value());  // a read within the interval: not checked (cheap)
    expect_moved([&] { db->add_user(user("bob")); }, "was deleted");
    // Once seen, reads fail too without waiting for the next check.
    expect_moved([&] { db->find_user("alice"); }, "was deleted");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(store_networks, both_fixture, *boost::unit_test::label("unit") * boost::unit_test::label("both"))

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

    sql->must("INSERT INTO allowed_networks (cidr) VALUES ('172.16.0.0/12')");
    auto const g2 = db->network_generation();
    BOOST_TEST(g2 != g1);

    sql->must("UPDATE allowed_networks SET note = 'changed' WHERE cidr = '10.0.0.0/8'");
    auto const g3 = db->network_generation();
    BOOST_TEST(g3 != g2);

    sql->must("DELETE FROM allowed_networks WHERE cidr = '172.16.0.0/12'");
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
// The address and network rules of sql/002_readable_address_rules.sql: one
// trigger per rule, for INSERT and for UPDATE, each with a message that says
// what is wrong and what to write instead (sql/README.md lists them).
BOOST_FIXTURE_TEST_SUITE(store_address_rules, store_fixture, *boost::unit_test::label("unit"))

enum class rule_column { address, cidr };

struct rule_case {
    rule_column column;
    std::string_view value;
    std::string_view message;  // the start of the rule's message
};
std::ostream& operator<<(std::ostream& os, rule_case const& c)
{
    return os << (c.column == rule_column::address ? "address '" : "cidr '") << c.value << "'";
}

// A row to update, so that UPDATE is checked as well as INSERT.
constexpr char const* rule_rows =
    "INSERT INTO relay_grants (address, expires_at) VALUES ('192.0.2.1', unixepoch() + 60);"
    " INSERT INTO allowed_networks (cidr) VALUES ('198.51.100.0/24')";

std::string insert_sql(rule_column c)
{
    return c == rule_column::address ? "INSERT INTO relay_grants (address, expires_at) VALUES (?1, unixepoch() + 60)"
                                     : "INSERT INTO allowed_networks (cidr) VALUES (?1)";
}
std::string update_sql(rule_column c)
{
    return c == rule_column::address ? "UPDATE relay_grants SET address = ?1 WHERE address = '192.0.2.1'"
                                     : "UPDATE allowed_networks SET cidr = ?1 WHERE cidr = '198.51.100.0/24'";
}

// Each value breaks exactly one rule, so the message is that rule's.
using enum rule_column;
constexpr rule_case refused[]{
    {address, "mail.example.org", "relay_grants.address: not an IP address; write"},
    {address, " 192.0.2.7", "relay_grants.address: not an IP address; write"},
    {address, "192.0.2.0/24", "relay_grants.address: a grant is for one address, without /prefix; write"},
    {address, "2001:db8::/64", "relay_grants.address: a grant is for one address, without /prefix; write"},
    {address, "[2001:db8::1]", "relay_grants.address: an IPv6 address has only hex digits and colons"},
    {address, "fe80::1%eth0", "relay_grants.address: an IPv6 address has only hex digits and colons"},
    {address, "2001:DB8::1", "relay_grants.address: uppercase IPv6 is not accepted; write"},
    {address, "192.0.2.7:25", "relay_grants.address: mixes colons and dots; write"},
    {address, "64:ff9b::192.0.2.7", "relay_grants.address: mixes colons and dots; write"},
    {address, "::ffff:192.0.2.7",
     "relay_grants.address: IPv4-mapped IPv6 (::ffff:a.b.c.d) is not accepted; write the IPv4 address a.b.c.d"},
    {address, "", "relay_grants.address: an IPv4 address is four numbers separated by dots; write"},
    {address, "192.0.2", "relay_grants.address: an IPv4 address is four numbers separated by dots; write"},
    {address, "192.0.2.7.", "relay_grants.address: an IPv4 address is four numbers separated by dots; write"},
    {address, "192..2.7", "relay_grants.address: an IPv4 address is four numbers separated by dots; write"},
    {address, "192.0.2.07", "relay_grants.address: leading zeros in an IPv4 address are not accepted; write"},
    {address, "192.0.2.256", "relay_grants.address: an IPv4 number is 0 to 255; write"},
    {address, "300.0.2.7", "relay_grants.address: an IPv4 number is 0 to 255; write"},
    {address, "1000.0.2.7", "relay_grants.address: an IPv4 number is 0 to 255; write"},
    {address, "2001:db8::12345", "relay_grants.address: an IPv6 group has at most four hex digits; write"},
    {address, "1::2::3", "relay_grants.address: IPv6 has at most one :: and never :::; write"},
    {address, "1:::2", "relay_grants.address: IPv6 has at most one :: and never :::; write"},
    {address, "2001:db8", "relay_grants.address: IPv6 has 2 to 7 colons; write"},
    {address, "1:2:3:4:5:6:7:8:9", "relay_grants.address: IPv6 has 2 to 7 colons; write"},
    {address, "::1:2:3:4:5:6:7", "relay_grants.address: IPv6 has 2 to 7 colons; write"},
    {cidr, "localnet", "allowed_networks.cidr: not a network; write"},
    {cidr, "fe80::%eth0/64", "allowed_networks.cidr: an IPv6 network has only hex digits and colons"},
    {cidr, "2001:DB8::/32", "allowed_networks.cidr: uppercase IPv6 is not accepted; write"},
    {cidr, "192.0.2.0:24", "allowed_networks.cidr: mixes colons and dots; write"},
    {cidr, "::ffff:192.0.2.0/120",
     "allowed_networks.cidr: IPv4-mapped IPv6 (::ffff:a.b.c.d/nnn) is not accepted; write the IPv4 network"},
    {cidr, "10/8", "allowed_networks.cidr: an IPv4 network is four numbers separated by dots"},
    {cidr, "10.0.0/8", "allowed_networks.cidr: an IPv4 network is four numbers separated by dots"},
    {cidr, "010.0.0.0/8", "allowed_networks.cidr: leading zeros in an IPv4 address are not accepted; write"},
    {cidr, "10.0.0.256/32", "allowed_networks.cidr: an IPv4 number is 0 to 255; write"},
    {cidr, "2001:db8:12345::/48", "allowed_networks.cidr: an IPv6 group has at most four hex digits; write"},
    {cidr, "1::2::/64", "allowed_networks.cidr: IPv6 has at most one :: and never :::; write"},
    {cidr, "2001:db8/32", "allowed_networks.cidr: IPv6 has 2 to 7 colons; write"},
    {cidr, "10.0.0.0/", "allowed_networks.cidr: the prefix length after / is a number, not a netmask; write"},
    {cidr, "10.0.0.0/x", "allowed_networks.cidr: the prefix length after / is a number, not a netmask; write"},
    {cidr, "10.0.0.0/-1", "allowed_networks.cidr: the prefix length after / is a number, not a netmask; write"},
    {cidr, "10.0.0.0/08", "allowed_networks.cidr: a leading zero in the prefix length is not accepted; write"},
    {cidr, "10.0.0.0/33", "allowed_networks.cidr: an IPv4 prefix length is 0 to 32; write"},
    {cidr, "2001:db8::/129", "allowed_networks.cidr: an IPv6 prefix length is 0 to 128; write"},
    // Migration 3: one spelling per address, no host bits under a prefix.
    {address, "1:2:3", "relay_grants.address: IPv6 is eight groups, or fewer with :: in place of zero groups"},
    {address, ":1::2", "relay_grants.address: IPv6 is eight groups, or fewer with :: in place of zero groups"},
    {address, "1:2:3:4:5:6:7:", "relay_grants.address: IPv6 is eight groups, or fewer with :: in place of zero groups"},
    {address, "2001:0db8::1", "relay_grants.address: leading zeros in an IPv6 group are not accepted; write"},
    {address, "2001:db8::00", "relay_grants.address: leading zeros in an IPv6 group are not accepted; write"},
    {address, "1:2:3::5:6:7:8", "relay_grants.address: :: stands for two or more zero groups, never one; write"},
    {address, "0:0:0:0:0:0:0:1", "relay_grants.address: two or more zero groups in a row are written ::; write"},
    {address, "2001:db8:0:0:1:0:0:1", "relay_grants.address: two or more zero groups in a row are written ::; write"},
    {address, "0::1", "relay_grants.address: :: takes in every zero group beside it; write"},
    {address, "1:0::", "relay_grants.address: :: takes in every zero group beside it; write"},
    {address, "2001:db8:0:0:1::1", "relay_grants.address: :: stands for the longest run of zero groups"},
    {address, "1:0:0:0:2::3", "relay_grants.address: :: stands for the longest run of zero groups"},
    {address, "::ffff:7f00:3",
     "relay_grants.address: IPv4-mapped IPv6 (::ffff:c000:207) is not accepted; write the IPv4 address"},
    {address, "::ffff:0:0",
     "relay_grants.address: IPv4-mapped IPv6 (::ffff:c000:207) is not accepted; write the IPv4 address"},
    {cidr, "1:2:3/0", "allowed_networks.cidr: IPv6 is eight groups, or fewer with :: in place of zero groups"},
    {cidr, "2001:0db8::/32", "allowed_networks.cidr: leading zeros in an IPv6 group are not accepted; write"},
    {cidr, "2001:db8::1:1:1:1:1/128", "allowed_networks.cidr: :: stands for two or more zero groups, never one"},
    {cidr, "2001:db8:0:0:0:0:0:0/32", "allowed_networks.cidr: two or more zero groups in a row are written ::"},
    {cidr, "2001:db8:0::/32", "allowed_networks.cidr: :: takes in every zero group beside it; write"},
    {cidr, "2001::1:0:0:0:0/64", "allowed_networks.cidr: :: stands for the longest run of zero groups"},
    {cidr, "::ffff:c000:200/120",
     "allowed_networks.cidr: IPv4-mapped IPv6 (::ffff:c000:200/120) is not accepted; write the IPv4 network"},
    {cidr, "::ffff:7f00:3", "allowed_networks.cidr: IPv4-mapped IPv6 (::ffff:c000:200/120) is not accepted"},
    {cidr, "127.0.7.9/16", "allowed_networks.cidr: host bits are set under the prefix length; write the network"},
    {cidr, "192.0.2.5/24", "allowed_networks.cidr: host bits are set under the prefix length; write the network"},
    {cidr, "10.0.0.1/8", "allowed_networks.cidr: host bits are set under the prefix length; write the network"},
    {cidr, "0.0.0.1/0", "allowed_networks.cidr: host bits are set under the prefix length; write the network"},
    {cidr, "192.0.2.129/25", "allowed_networks.cidr: host bits are set under the prefix length; write the network"},
    {cidr, "2001:db8::1/32", "allowed_networks.cidr: host bits are set under the prefix length; write the network"},
    {cidr, "2001:db8:4000::/33", "allowed_networks.cidr: host bits are set under the prefix length; write"},
    {cidr, "::1/0", "allowed_networks.cidr: host bits are set under the prefix length; write the network"},
    {cidr, "fe80::1/10", "allowed_networks.cidr: host bits are set under the prefix length; write the network"},
    {cidr, "2001:db8::9/125", "allowed_networks.cidr: host bits are set under the prefix length; write the network"},
};

BOOST_DATA_TEST_CASE(each_rule_refuses_with_its_message, bdata::make(refused), c)
{
    raw_db raw(file);
    raw.must(rule_rows);
    for (auto const& sql : {insert_sql(c.column), update_sql(c.column)}) {
        auto const err = raw.exec_with(sql, c.value);
        BOOST_TEST(err.find(c.message) == 0u, sql << " -> " << (err.empty() ? "accepted" : err));
    }
    BOOST_TEST(raw.scalar("SELECT count(*) FROM relay_grants") == 1);
    BOOST_TEST(raw.scalar("SELECT count(*) FROM allowed_networks") == 1);
}

constexpr rule_case accepted[]{
    {address, "192.0.2.7", ""},
    {address, "0.0.0.0", ""},
    {address, "10.0.0.1", ""},
    {address, "255.255.255.255", ""},
    {address, "2001:db8::1", ""},
    {address, "2001:db8:1:2::", ""},  // what the daemon writes for a /64 grant
    {address, "::1", ""},
    {address, "::", ""},
    {address, "fe80::1:2", ""},
    {address, "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff", ""},
    {cidr, "10.0.0.0/8", ""},
    {cidr, "0.0.0.0/0", ""},
    {cidr, "192.0.2.7", ""},
    {cidr, "192.0.2.7/32", ""},
    {cidr, "2001:db8::/32", ""},
    {cidr, "2001:db8::1/128", ""},
    {cidr, "2001:db8::1", ""},
    {cidr, "::/0", ""},
    // Canonical forms that look close to what migration 3 refuses.
    {address, "::ffff:1", ""},             // 0:0:0:0:0:0:ffff:1 is not IPv4-mapped
    {address, "::7f00:1", ""},             // nor is the old IPv4-compatible form
    {address, "2001:db8::1:0:0:1", ""},    // equally long runs: :: for the first
    {address, "1::2:0:0:3", ""},           // a shorter run stays written out
    {address, "2001:db8:0:1:1:1:1:1", ""}, // one zero group is written 0
    {address, "1:0:1:0:1:0:1:0", ""},
    {address, "ffff::", ""},
    {cidr, "127.0.0.0/16", ""},
    {cidr, "192.0.2.128/25", ""},
    {cidr, "255.255.255.255/32", ""},
    {cidr, "2001:db8:8000::/33", ""},
    {cidr, "fe80::/10", ""},
    {cidr, "2001:db8::8/126", ""},
    {cidr, "2001:db8:0:1:1:1:1:0/112", ""},
};

BOOST_DATA_TEST_CASE(valid_forms_are_accepted, bdata::make(accepted), c)
{
    raw_db raw(file);
    raw.must(rule_rows);
    auto const err = raw.exec_with(insert_sql(c.column), c.value);
    BOOST_TEST(err.empty(), "INSERT -> " << err);
    raw.must("DELETE FROM relay_grants WHERE address <> '192.0.2.1';"
             " DELETE FROM allowed_networks WHERE cidr <> '198.51.100.0/24'");
    auto const uerr = raw.exec_with(update_sql(c.column), c.value);
    BOOST_TEST(uerr.empty(), "UPDATE -> " << uerr);
}

// Every rule guards both INSERT and UPDATE of its column with the same condition.
BOOST_AUTO_TEST_CASE(every_rule_has_an_insert_and_an_update_trigger)
{
    raw_db raw(file);
    auto const ins = raw.column("SELECT name FROM sqlite_schema WHERE type = 'trigger'"
                                " AND (name GLOB 'relay_grants_address_*_insert'"
                                " OR name GLOB 'allowed_networks_cidr_*_insert')");
    BOOST_TEST(ins.size() >= 20u);
    for (auto const& n : ins) {
        auto const stem = n.substr(0, n.size() - std::string_view("_insert").size());
        bool const on_grants = n.starts_with("relay_grants");
        std::string const from = on_grants ? "BEFORE INSERT ON relay_grants" : "BEFORE INSERT ON allowed_networks";
        std::string const to =
            on_grants ? "BEFORE UPDATE OF address ON relay_grants" : "BEFORE UPDATE OF cidr ON allowed_networks";
        auto body = [&](std::string const& name, std::string const& event) {
            auto const sql = raw.column("SELECT sql FROM sqlite_schema WHERE name = '" + name + "'");
            if (sql.size() != 1) return std::string("missing");
            auto text = sql[0];
            text.replace(text.find(name), name.size(), "RULE");
            auto const at = text.find(event);
            return at == std::string::npos ? std::string("no ") + event : text.replace(at, event.size(), "EVENT");
        };
        BOOST_TEST(body(n, from) == body(stem + "_update", to), n);
    }
}

// Every "write X, not Y" in a rule's message is right: X is accepted, and Y is
// refused with that very message.
BOOST_AUTO_TEST_CASE(message_examples_are_right)
{
    raw_db raw(file);
    auto const names = raw.column("SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name GLOB '*_insert'"
                                  " AND (name GLOB 'relay_grants_address_*' OR name GLOB 'allowed_networks_cidr_*')");
    std::regex const example(R"((?:write |\()([^ ,;()/][^ ,;()]*), not ([^ ,;()]+))");
    std::size_t checked = 0;
    for (auto const& n : names) {
        auto const sql = raw.column("SELECT sql FROM sqlite_schema WHERE name = '" + n + "'").at(0);
        auto const from = sql.find("RAISE(ABORT, '") + 14;
        std::string message = sql.substr(from, sql.rfind("')") - from);
        for (std::size_t at = 0; (at = message.find("''", at)) != std::string::npos; ++at) message.erase(at, 1);
        rule_column const column = n.starts_with("relay_grants") ? rule_column::address : rule_column::cidr;
        for (std::sregex_iterator it(message.begin(), message.end(), example), end; it != end; ++it) {
            auto const good = (*it)[1].str(), bad = (*it)[2].str();
            BOOST_TEST(raw.exec_with(insert_sql(column), good).empty(), n << ": '" << good << "' is refused");
            raw.must("DELETE FROM relay_grants; DELETE FROM allowed_networks");
            BOOST_TEST(raw.exec_with(insert_sql(column), bad) == message, n << ": '" << bad << "'");
            ++checked;
        }
    }
    BOOST_TEST(checked >= 19u);
}

// Migration 2 only restates migration 1's checks: over many values, a value is
// refused after migration 2 exactly when migration 1 refused it.
BOOST_AUTO_TEST_CASE(rules_accept_exactly_what_migration_1_accepted)
{
    raw_db v1(tmp.path / "v1.db"), v2(tmp.path / "v2.db");
    BOOST_TEST_REQUIRE(migrate(v1.get(), 1) == 1);
    BOOST_TEST_REQUIRE(migrate(v2.get(), 2) == 2);
    std::vector<std::string> values{"1:2:3", "::", ":1::2", "1::2:", "1:2:3:4:5:6:7::", "1:2:3::5:6:7:8",
                                    "::ffff:1.2.3.4", "::FFFF:1.2.3.4", "1.2.3.4/32/1", "1.2.3.4//8", "/8",
                                    "12345678901234567890123", "1.2.3.4/12345678901234567890123"};
    // Every string up to 5 characters over a small alphabet...
    std::string const alphabet = "09.:a/";
    std::vector<std::string> level{""};
    for (int len = 0; len <= 5; ++len) {
        std::vector<std::string> next;
        for (auto const& v : level) {
            values.push_back(v);
            if (len < 5)
                for (char ch : alphabet) next.push_back(v + ch);
        }
        level = std::move(next);
    }
    // ...and addresses and networks built from numbers near the limits.
    for (auto const* a : {"0", "00", "01", "9", "25", "199", "255", "256", "259", "260", "299", "300", "999", "1000"})
        for (auto const* b : {"0", "255", "256", "07"}) {
            values.push_back(std::string(a) + ".2." + b + ".4");
            values.push_back(std::string("1.") + a + ".3." + b);
        }
    for (auto const* g : {"0", "ab", "abcd", "abcde", "ABCD", "g"})
        for (auto const* shape : {"%::1", "1:%::", "%:1:2:3:4:5:6:7", "1:2:3:4:%:5:6:7:8", "::ffff:%"})
            values.push_back(std::string(shape).replace(std::string(shape).find('%'), 1, g));
    for (auto const* p : {"", "0", "00", "08", "32", "33", "128", "129", "999", "1000", "-1", "x"})
        for (auto const* h : {"10.0.0.0", "2001:db8::", "1:2:3", "10.0.0"}) values.push_back(std::string(h) + "/" + p);

    v1.must(std::string(rule_rows) + "; BEGIN");  // one transaction: no fsync per statement
    v2.must(std::string(rule_rows) + "; BEGIN");
    // Prepared once: preparing a statement compiles every trigger of the table.
    struct prepared {
        sqlite3* db;
        sqlite3_stmt* s = nullptr;
        prepared(raw_db& conn, std::string const& sql) : db(conn.get())
        {
            BOOST_TEST_REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK, sqlite3_errmsg(db));
        }
        ~prepared() { sqlite3_finalize(s); }
        prepared(prepared const&) = delete;
        prepared& operator=(prepared const&) = delete;
        bool run(std::string const& v)  // true: done; false: refused
        {
            sqlite3_reset(s);
            if (sqlite3_bind_parameter_count(s) > 0)
                sqlite3_bind_text(s, 1, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
            return sqlite3_step(s) == SQLITE_DONE;
        }
    };
    std::size_t differ = 0;
    for (auto const column : {rule_column::address, rule_column::cidr}) {
        std::string const undo_insert = column == rule_column::address
                                            ? "DELETE FROM relay_grants WHERE address <> '192.0.2.1'"
                                            : "DELETE FROM allowed_networks WHERE cidr <> '198.51.100.0/24'";
        std::string const undo_update = column == rule_column::address
                                            ? "UPDATE relay_grants SET address = '192.0.2.1'"
                                            : "UPDATE allowed_networks SET cidr = '198.51.100.0/24'";
        for (auto const& [sql, undo] : {std::pair{insert_sql(column), undo_insert},
                                        std::pair{update_sql(column), undo_update}}) {
            prepared op1(v1, sql), op2(v2, sql), undo1(v1, undo), undo2(v2, undo);
            for (auto const& v : values) {
                bool const before = op1.run(v), after = op2.run(v);
                if (before) BOOST_TEST_REQUIRE(undo1.run(""));
                if (after) BOOST_TEST_REQUIRE(undo2.run(""));
                if (before != after && ++differ <= 10)
                    BOOST_ERROR(sql << " with '" << v << "': migration 1 " << (before ? "accepted" : "refused")
                                    << ", migration 2 " << (after ? "accepted" : "refused"));
            }
        }
    }
    BOOST_TEST(differ == 0u);
    BOOST_TEST(values.size() > 9000u);
    v1.must("ROLLBACK");
    v2.must("ROLLBACK");
}

// A database made by an older popgate (schema version 1) keeps every row when
// it is upgraded, and the new rules guard it from then on.
BOOST_AUTO_TEST_CASE(upgrade_from_version_1_keeps_rows)
{
    auto const path = tmp.path / "old.db";
    std::vector<std::string> rows_before;
    std::string const rows_sql =
        "SELECT 'grant ' || address || ' ' || user || ' ' || method || ' ' || tls || ' ' || granted_at || ' ' ||"
        " expires_at || ' ' || hits FROM relay_grants"
        " UNION ALL SELECT 'network ' || id || ' ' || cidr || ' ' || note || ' ' || coalesce(expires_at, '-')"
        " FROM allowed_networks"
        " UNION ALL SELECT 'user ' || name FROM users"
        " UNION ALL SELECT 'audit ' || event || ' ' || address FROM audit_log ORDER BY 1";
    std::int64_t generation = -1;
    {
        raw_db raw(path);
        BOOST_TEST_REQUIRE(migrate(raw.get(), 1) == 1);
        raw.must("INSERT INTO users (name, password_hash) VALUES ('alice', '$6$saltsalt$abcdefghijk')");
        raw.must("INSERT INTO relay_grants (address, user, method, tls, granted_at, expires_at, hits) VALUES"
                 " ('192.0.2.7', 'alice', 'pass', 1, unixepoch(), unixepoch() + 600, 3),"
                 " ('2001:db8:1:2::', 'alice', 'sasl-plain', 0, unixepoch(), unixepoch() + 600, 0),"
                 " ('198.51.100.9', '', 'sql', 0, 100, 200, 0),"  // expired, still a row
                 " ('1:2:3', '', 'sql', 0, unixepoch(), unixepoch() + 600, 0)");  // odd, but accepted by 1
        raw.must("INSERT INTO allowed_networks (cidr, note) VALUES ('10.0.0.0/8', 'lan'),"
                 " ('192.0.2.5/24', 'host bits'), ('2001:db8::/32', ''), ('203.0.113.7', 'one host')");
        raw.must("INSERT INTO audit_log (event, address) VALUES ('grant', '192.0.2.7')");
        rows_before = raw.column(rows_sql);
        generation = raw.scalar("SELECT generation FROM network_generation");
    }
    BOOST_TEST_REQUIRE(rows_before.size() == 10u);

    auto upgraded = open_sqlite_store(path);  // the daemon's start: applies the pending migrations
    BOOST_TEST(upgraded->schema_version() == latest_schema_version());
    raw_db raw(path);
    BOOST_TEST(raw.column(rows_sql) == rows_before, boost::test_tools::per_element());
    BOOST_TEST(raw.scalar("SELECT generation FROM network_generation") == generation);
    BOOST_TEST(raw.scalar("SELECT count(*) FROM sqlite_schema WHERE name IN ('relay_grants_address_insert',"
                          " 'relay_grants_address_update', 'allowed_networks_cidr_insert',"
                          " 'allowed_networks_cidr_update')") == 0);
    BOOST_TEST(upgraded->integrity_ok());
    std::vector<std::string> const key{"192.0.2.7"};
    BOOST_TEST(upgraded->find_active_grant(key, now()).has_value());
    BOOST_TEST(upgraded->list_networks().size() == 4u);

    // The new rules hold for new rows and for changed ones.
    auto err = raw.exec("INSERT INTO relay_grants (address, expires_at) VALUES ('::ffff:192.0.2.8', unixepoch() + 60)");
    BOOST_TEST(err.find("relay_grants.address: IPv4-mapped IPv6") == 0u, err);
    err = raw.exec("UPDATE relay_grants SET address = '192.0.2.300' WHERE address = '192.0.2.7'");
    BOOST_TEST(err.find("relay_grants.address: an IPv4 number is 0 to 255") == 0u, err);
    err = raw.exec("UPDATE allowed_networks SET cidr = '10.0.0.0/33' WHERE cidr = '10.0.0.0/8'");
    BOOST_TEST(err.find("allowed_networks.cidr: an IPv4 prefix length is 0 to 32") == 0u, err);
    BOOST_TEST(raw.column(rows_sql) == rows_before, boost::test_tools::per_element());
}

// The rules of migration 3 against the daemon's own printer: over many
// spellings of many addresses, a grant is accepted exactly when it is the
// text net::ip_address::to_string() gives (the text grants are looked up by),
// and a network exactly when it is that text, with a /prefix that leaves no
// host bits (what net::parse_cidr and net::spelling_problem accept).
BOOST_AUTO_TEST_CASE(rules_accept_exactly_the_canonical_spelling)
{
    raw_db raw(file);
    raw.must(std::string(rule_rows) + "; BEGIN");
    struct prepared_insert {
        sqlite3_stmt* s = nullptr;
        sqlite3_stmt* undo = nullptr;
        prepared_insert(raw_db& conn, rule_column c)
        {
            BOOST_TEST_REQUIRE(sqlite3_prepare_v2(conn.get(), insert_sql(c).c_str(), -1, &s, nullptr) == SQLITE_OK);
            std::string const u = c == rule_column::address ? "DELETE FROM relay_grants WHERE address <> '192.0.2.1'"
                                                            : "DELETE FROM allowed_networks WHERE cidr <> '198.51.100.0/24'";
            BOOST_TEST_REQUIRE(sqlite3_prepare_v2(conn.get(), u.c_str(), -1, &undo, nullptr) == SQLITE_OK);
        }
        ~prepared_insert()
        {
            sqlite3_finalize(s);
            sqlite3_finalize(undo);
        }
        prepared_insert(prepared_insert const&) = delete;
        prepared_insert& operator=(prepared_insert const&) = delete;
        bool accepts(std::string const& v)
        {
            sqlite3_reset(s);
            sqlite3_bind_text(s, 1, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
            bool const ok = sqlite3_step(s) == SQLITE_DONE;
            sqlite3_reset(undo);
            sqlite3_step(undo);
            return ok;
        }
    } grants(raw, rule_column::address), networks(raw, rule_column::cidr);

    // Every way to write eight groups: all of them, with and without leading
    // zeros, and :: for any part of any run of zero groups.
    auto spellings = [](std::array<unsigned, 8> const& g) {
        std::vector<std::string> hex(8), padded(8);
        for (std::size_t i = 0; i < 8; ++i) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "%x", g[i]);
            hex[i] = buf;
            std::snprintf(buf, sizeof buf, "%04x", g[i]);
            padded[i] = buf;
        }
        auto join = [](std::vector<std::string> const& v, std::size_t from, std::size_t to) {
            std::string out;
            for (std::size_t i = from; i < to; ++i) out += (i > from ? ":" : "") + v[i];
            return out;
        };
        std::vector<std::string> out{join(hex, 0, 8), join(padded, 0, 8)};
        for (std::size_t a = 0; a < 8; ++a)
            for (std::size_t b = a + 1; b <= 8 && g[b - 1] == 0; ++b) {
                out.push_back(join(hex, 0, a) + "::" + join(hex, b, 8));
                out.push_back(join(padded, 0, a) + "::" + join(hex, b, 8));
            }
        return out;
    };
    std::mt19937 rng(5952);
    std::array<unsigned, 9> const picks{0, 0, 0, 0, 1, 0xffff, 0xdb8, 0x2001, 0x8000};
    std::size_t checked = 0, differ = 0;
    auto check = [&](bool got, bool expected, std::string const& what) {
        ++checked;
        if (got != expected && ++differ <= 10)
            BOOST_ERROR(what << ": " << (got ? "accepted" : "refused") << ", the daemon's parser says "
                             << (expected ? "canonical" : "not canonical"));
    };
    for (int n = 0; n < 1500; ++n) {
        std::array<unsigned, 8> g{};
        auto const any16 = [&] { return static_cast<unsigned>(rng() & 0xffff); };
        for (auto& x : g) x = n % 7 == 0 ? any16() : picks[rng() % picks.size()];
        if (n % 11 == 0) g = {0, 0, 0, 0, 0, 0xffff, any16(), any16()};  // IPv4-mapped
        for (auto const& text : spellings(g)) {
            auto const a = popgate::net::parse_ip(text);
            BOOST_TEST_REQUIRE(a.has_value(), text);
            check(grants.accepts(text), a->to_string() == text, "grant '" + text + "'");
            auto const net = text + "/" + std::to_string(rng() % 129);
            auto const c = popgate::net::parse_cidr(net);
            check(networks.accepts(net), c && popgate::net::spelling_problem(net, *c).empty(),
                  "network '" + net + "'");
        }
    }
    for (int n = 0; n < 2000; ++n) {
        auto const v = static_cast<std::uint32_t>(n % 3 == 0 ? rng() : rng() & 0xffffff00u);
        auto const net = popgate::net::ip_address::from_v4(v).to_string() + "/" + std::to_string(rng() % 33);
        auto const c = popgate::net::parse_cidr(net);
        check(networks.accepts(net), c.has_value(), "network '" + net + "'");
    }
    BOOST_TEST(differ == 0u);
    BOOST_TEST(checked > 20000u);
    raw.must("ROLLBACK");
}

// A database from before migration 3 may hold rows its rules refuse: the
// upgrade keeps them as they are (the daemon reports them, relay::decider),
// other columns of such a row can still change, and new rows must be canonical.
BOOST_AUTO_TEST_CASE(upgrade_from_version_2_keeps_rows_the_new_rules_refuse)
{
    auto const path = tmp.path / "v2.db";
    std::string const rows_sql = "SELECT address || ' ' || expires_at FROM relay_grants"
                                 " UNION ALL SELECT cidr FROM allowed_networks ORDER BY 1";
    std::vector<std::string> rows_before;
    {
        raw_db raw(path);
        BOOST_TEST_REQUIRE(migrate(raw.get(), 2) == 2);
        raw.must("INSERT INTO relay_grants (address, expires_at) VALUES ('0::1', 2000000000),"
                 " ('0:0:0:0:0:0:0:1', 2000000000), ('::ffff:7f00:3', 2000000000), ('1:2:3', 2000000000)");
        raw.must("INSERT INTO allowed_networks (cidr) VALUES ('127.0.7.9/16'), ('2001:0db8::/32'), ('10.0.0.0/8')");
        rows_before = raw.column(rows_sql);
    }
    BOOST_TEST_REQUIRE(rows_before.size() == 7u);
    auto upgraded = open_sqlite_store(path);
    BOOST_TEST(upgraded->schema_version() == latest_schema_version());
    BOOST_TEST(latest_schema_version() >= 3);
    raw_db raw(path);
    BOOST_TEST(raw.column(rows_sql) == rows_before, boost::test_tools::per_element());
    BOOST_TEST(upgraded->integrity_ok());
    // Changing another column of such a row is not a new spelling.
    raw.must("UPDATE relay_grants SET expires_at = 2000000001 WHERE address = '0::1'");
    raw.must("UPDATE allowed_networks SET note = 'typo' WHERE cidr = '127.0.7.9/16'");
    // The IPv6 rows are what the daemon's row check reads.
    auto six = upgraded->ipv6_grant_addresses(now());
    std::sort(six.begin(), six.end());
    BOOST_TEST(six == (std::vector<std::string>{"0:0:0:0:0:0:0:1", "0::1", "1:2:3", "::ffff:7f00:3"}),
               boost::test_tools::per_element());
    // The same spellings are refused from now on.
    auto err = raw.exec("INSERT INTO relay_grants (address, expires_at) VALUES ('0::2', unixepoch() + 60)");
    BOOST_TEST(err.find("relay_grants.address: :: takes in every zero group beside it") == 0u, err);
    err = raw.exec("UPDATE allowed_networks SET cidr = '10.0.0.1/8' WHERE cidr = '10.0.0.0/8'");
    BOOST_TEST(err.find("allowed_networks.cidr: host bits are set under the prefix length") == 0u, err);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(store_relay_clients_view, both_fixture, *boost::unit_test::label("unit") * boost::unit_test::label("both"))

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
    sql->must("INSERT INTO allowed_networks (cidr, created_at, expires_at)"
              " VALUES ('172.16.0.0/12', unixepoch() - 600, unixepoch() - 10)");  // expired
    sql->must("INSERT INTO allowed_networks (cidr, created_at, expires_at)"
              " VALUES ('172.31.0.0/16', unixepoch() - 600, unixepoch() + 600)");

    auto got = sql->column("SELECT client || ' ' || source || ' ' || coalesce(\"user\", '-') FROM relay_clients");
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
BOOST_FIXTURE_TEST_SUITE(store_audit, both_fixture, *boost::unit_test::label("unit") * boost::unit_test::label("both"))

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
    sql->must("UPDATE audit_log SET at = unixepoch() - 100 * 86400 WHERE address = '192.0.2.1'");
    BOOST_TEST(db->purge_audit(1000, now() - 90 * 86400) == 1u);
    auto const left = db->list_audit(10);
    BOOST_TEST_REQUIRE(left.size() == 2u);
    BOOST_TEST(left[1].address == "192.0.2.2");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// What the store says about its database, on either engine.
BOOST_FIXTURE_TEST_SUITE(store_schema, both_fixture,
                         *boost::unit_test::label("unit") * boost::unit_test::label("both"))

BOOST_AUTO_TEST_CASE(a_fresh_database_is_at_the_latest_schema_and_sound)
{
    // Both engines number their schema alike (sql/README.md).
    BOOST_TEST(db->schema_version() == latest_schema_version());
    BOOST_TEST(db->integrity_ok());
    auto const engine = db->engine_version();
    BOOST_TEST(engine.starts_with(pg() ? "PostgreSQL 15." : "SQLite 3."), engine);
    BOOST_TEST(db->crosses_network() == pg());
}

BOOST_AUTO_TEST_CASE(a_newer_schema_is_refused)
{
    sql->must("INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')");
    struct forget {
        popgate::test::sql_shell& sql;
        ~forget() { (void)sql.exec("DELETE FROM schema_migrations WHERE version = 999"); }
    } const undo{*sql};
    for (bool const migrate_on_open : {true, false}) {
        try {
            backend.open({.migrate = migrate_on_open});
            BOOST_ERROR("a database with schema 999 was opened, migrate=" << migrate_on_open);
        } catch (store_error const& e) {
            BOOST_TEST((e.code() == store_errc::schema_too_new));
            BOOST_TEST(std::string(e.what()).find("newer") != std::string::npos, e.what());
            BOOST_TEST(std::string(e.what()).find("999") != std::string::npos, e.what());
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// Hits, last use and the hourly quota counters a grant carries (sql/005),
// and the reads over many grants.
BOOST_FIXTURE_TEST_SUITE(store_grant_counters, both_fixture,
                         *boost::unit_test::label("unit") * boost::unit_test::label("both"))


BOOST_AUTO_TEST_CASE(touches_count_hits_and_quota_per_clock_hour)
{
    auto const t = now();
    auto const hour = t - t % 3600;
    db->upsert_grant(make_grant("192.0.2.7", "alice", t - 10, t + 600));
    apply_ops(*db, {grant_touch{"192.0.2.7", t, 1, hour, 1, 2}, grant_touch{"192.0.2.7", t - 5, 2, hour, 0, 3}});
    auto g = the_grant(*db, "192.0.2.7");
    BOOST_TEST(g.hits == 3);
    BOOST_TEST(g.last_used.value_or(0) == t);  // the latest use, not the last written
    BOOST_TEST(g.quota_hour == hour);
    BOOST_TEST(g.quota_messages == 1);
    BOOST_TEST(g.quota_recipients == 5);

    // Counts for an older hour (another node still in it) are dropped.
    apply_ops(*db, {grant_touch{"192.0.2.7", t, 1, hour - 3600, 4, 4}});
    g = the_grant(*db, "192.0.2.7");
    BOOST_TEST(g.hits == 4);
    BOOST_TEST(g.quota_hour == hour);
    BOOST_TEST(g.quota_messages == 1);
    BOOST_TEST(g.quota_recipients == 5);

    // A touch without quota use leaves the counters alone.
    db->touch_grant("192.0.2.7", t + 1);
    g = the_grant(*db, "192.0.2.7");
    BOOST_TEST(g.hits == 5);
    BOOST_TEST(g.last_used.value_or(0) == t + 1);
    BOOST_TEST(g.quota_recipients == 5);

    // A newer hour starts again from its own counts.
    apply_ops(*db, {grant_touch{"192.0.2.7", t + 3600, 1, hour + 3600, 1, 1}});
    g = the_grant(*db, "192.0.2.7");
    BOOST_TEST(g.quota_hour == hour + 3600);
    BOOST_TEST(g.quota_messages == 1);
    BOOST_TEST(g.quota_recipients == 1);
    BOOST_TEST(g.last_used.value_or(0) == t + 3600);

    // A refresh by a new login keeps what the address has used.
    db->upsert_grant(make_grant("192.0.2.7", "bob", t + 3601, t + 5000));
    g = the_grant(*db, "192.0.2.7");
    BOOST_TEST(g.user == "bob");
    BOOST_TEST(g.hits == 6);
    BOOST_TEST(g.quota_recipients == 1);

    // A touch for an address without a grant writes nothing and is no error.
    apply_ops(*db, {grant_touch{"192.0.2.99", t, 1, hour, 1, 1}});
    BOOST_TEST(db->list_grants(true, t).size() == 1u);
}

BOOST_AUTO_TEST_CASE(active_grants_of_a_user_oldest_first_and_counts)
{
    auto const t = now();
    db->upsert_grant(make_grant("192.0.2.2", "alice", t - 5, t + 600));
    db->upsert_grant(make_grant("192.0.2.1", "alice", t - 5, t + 600));  // as old: by address
    db->upsert_grant(make_grant("2001:db8:1:2::", "alice", t - 50, t + 600));
    db->upsert_grant(make_grant("192.0.2.3", "alice", t - 100, t - 1));  // expired
    db->upsert_grant(make_grant("192.0.2.4", "bob", t - 1, t + 600));
    BOOST_TEST(addresses(db->active_grants_of_user("alice", t)) ==
                   (std::vector<std::string>{"2001:db8:1:2::", "192.0.2.1", "192.0.2.2"}),
               boost::test_tools::per_element());
    BOOST_TEST(addresses(db->active_grants_of_user("alice", t - 2)).size() == 4u);
    BOOST_TEST(db->active_grants_of_user("nobody", t).empty());
    BOOST_TEST(db->count_active_grants(t) == 4u);
    BOOST_TEST(db->count_active_grants(t - 2) == 5u);
    BOOST_TEST(db->count_active_grants(t + 600) == 0u);
    BOOST_TEST(db->ipv6_grant_addresses(t) == std::vector<std::string>{"2001:db8:1:2::"},
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(list_grants_counts_the_users_sharing_an_address)
{
    auto const t = now();
    db->upsert_grant(make_grant("192.0.2.4", "alice", t - 10, t + 600));
    db->upsert_grant(make_grant("192.0.2.4", "bob", t, t + 900));  // the grant is bob's now
    db->upsert_grant(make_grant("192.0.2.5", "carol", t, t + 900));
    sql->must("INSERT INTO relay_grants (address, method, expires_at) VALUES ('198.51.100.1', 'sql', unixepoch() + 600)");
    auto const sharing = [&](unix_time at) {
        std::vector<std::string> out;
        for (auto const& g : db->list_grants(true, at))
            out.push_back(g.address + " " + g.user + " " + std::to_string(g.sharing_users));
        std::sort(out.begin(), out.end());
        return out;
    };
    BOOST_TEST(sharing(t) == (std::vector<std::string>{"192.0.2.4 bob 2", "192.0.2.5 carol 1", "198.51.100.1  0"}),
               boost::test_tools::per_element());
    // Once alice's login has expired, bob is alone there.
    BOOST_TEST(sharing(t + 700) == (std::vector<std::string>{"192.0.2.4 bob 1", "192.0.2.5 carol 1", "198.51.100.1  0"}),
               boost::test_tools::per_element());
    // Deleting the grant forgets its logins: a new grant there starts alone.
    BOOST_TEST(db->delete_grant("192.0.2.4"));
    db->upsert_grant(make_grant("192.0.2.4", "dave", t, t + 900));
    BOOST_TEST(sharing(t).front() == "192.0.2.4 dave 1");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// relay.max_grants_per_user = "replace-oldest" in write_batch (grant_cap).
BOOST_FIXTURE_TEST_SUITE(store_grant_cap, both_fixture,
                         *boost::unit_test::label("unit") * boost::unit_test::label("both"))

BOOST_AUTO_TEST_CASE(the_oldest_grants_go_each_with_a_revoke_row)
{
    auto const t = now();
    db->upsert_grant(make_grant("192.0.2.1", "alice", t - 300, t + 600));  // the oldest
    db->upsert_grant(make_grant("192.0.2.2", "alice", t - 200, t + 600));
    db->upsert_grant(make_grant("192.0.2.3", "alice", t - 100, t + 600));
    db->upsert_grant(make_grant("192.0.2.9", "alice", t - 900, t - 1));  // expired: neither counted nor revoked
    db->upsert_grant(make_grant("192.0.2.8", "bob", t - 900, t + 600));  // another user's
    std::vector<write_op> ops;
    ops.emplace_back(make_grant("192.0.2.4", "alice", t, t + 600));
    ops.emplace_back(grant_cap{"alice", "192.0.2.4", 2, t, "max-grants-per-user=2"});
    apply_ops(*db, ops);
    BOOST_TEST(addresses(db->active_grants_of_user("alice", t)) == (std::vector<std::string>{"192.0.2.3", "192.0.2.4"}),
               boost::test_tools::per_element());
    BOOST_TEST(addresses(db->active_grants_of_user("bob", t)) == std::vector<std::string>{"192.0.2.8"});
    BOOST_TEST(db->list_grants(true, t).size() == 4u);  // the expired one stays for the purge
    std::vector<std::string> revoked;
    for (auto const& a : db->list_audit(100)) {
        BOOST_TEST(a.event == "revoke");
        BOOST_TEST(a.user == "alice");
        BOOST_TEST(a.detail == "max-grants-per-user=2");
        revoked.push_back(a.address);
    }
    std::sort(revoked.begin(), revoked.end());
    BOOST_TEST(revoked == (std::vector<std::string>{"192.0.2.1", "192.0.2.2"}), boost::test_tools::per_element());

    // Within the cap: nothing goes.
    std::vector<write_op> within;
    within.emplace_back(grant_cap{"alice", "192.0.2.4", 2, t, "max-grants-per-user=2"});
    within.emplace_back(grant_cap{"alice", "192.0.2.4", 5, t, "max-grants-per-user=5"});
    apply_ops(*db, within);
    BOOST_TEST(db->active_grants_of_user("alice", t).size() == 2u);
    BOOST_TEST(db->list_audit(100).size() == 2u);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// A user who can no longer log in keeps no grant (sql/005_grant_guards.sql,
// sql/postgresql/005_initial.sql): whatever writes the change, the store or SQL.
BOOST_FIXTURE_TEST_SUITE(store_revocation, both_fixture,
                         *boost::unit_test::label("unit") * boost::unit_test::label("both"))

enum class user_change { deleted, disabled, renamed_by_sql, new_password, new_secret, disabled_by_sql };
struct revocation_case {
    user_change change;
    std::string_view detail;  // of each revoke audit row
};
std::ostream& operator<<(std::ostream& os, revocation_case const& c) { return os << c.detail; }

constexpr revocation_case revocations[]{
    {user_change::deleted, "user deleted"},
    {user_change::disabled, "user disabled"},
    {user_change::disabled_by_sql, "user disabled"},
    {user_change::renamed_by_sql, "user renamed"},
    {user_change::new_password, "password changed"},
    {user_change::new_secret, "password changed"},
};

BOOST_DATA_TEST_CASE(each_change_revokes_the_users_grants, bdata::make(revocations), c)
{
    auto const t = now();
    auto alice = user("alice");
    alice.shared_secret = "tanstaaf";
    db->add_user(alice);
    db->add_user(user("bob"));
    db->upsert_grant(make_grant("192.0.2.1", "alice", t, t + 600));
    db->upsert_grant(make_grant("2001:db8:1:2::", "alice", t, t + 600));
    db->upsert_grant(make_grant("192.0.2.3", "bob", t, t + 600));
    db->upsert_grant(make_grant("192.0.2.4", "alice", t - 10, t + 600));
    db->upsert_grant(make_grant("192.0.2.4", "bob", t, t + 600));  // bob logged in there last: his
    switch (c.change) {
    case user_change::deleted: BOOST_TEST(db->delete_user("alice")); break;
    case user_change::disabled: alice.disabled = true; db->update_user(alice); break;
    case user_change::disabled_by_sql: sql->must("UPDATE users SET disabled = true WHERE name = 'alice'"); break;
    case user_change::renamed_by_sql: sql->must("UPDATE users SET name = 'alice2' WHERE name = 'alice'"); break;
    case user_change::new_password: alice.password_hash = "$6$other$" + std::string(20, 'b'); db->update_user(alice); break;
    case user_change::new_secret: alice.shared_secret = "another"; db->update_user(alice); break;
    }
    BOOST_TEST(db->active_grants_of_user("alice", t).empty());
    std::vector<std::string> left;
    for (auto const& g : db->list_grants(true, t)) left.push_back(g.address + " " + g.user + " " + std::to_string(g.sharing_users));
    std::sort(left.begin(), left.end());
    // alice's login at 192.0.2.4 is forgotten too.
    BOOST_TEST(left == (std::vector<std::string>{"192.0.2.3 bob 1", "192.0.2.4 bob 1"}), boost::test_tools::per_element());
    std::vector<std::string> rows;
    for (auto const& a : db->list_audit(100)) rows.push_back(a.event + " " + a.address + " " + a.user + " " + a.detail);
    std::sort(rows.begin(), rows.end());
    std::string const d(c.detail);
    BOOST_TEST(rows == (std::vector<std::string>{"revoke 192.0.2.1 alice " + d, "revoke 2001:db8:1:2:: alice " + d}),
               boost::test_tools::per_element());
}

// sql/006_replace_revokes_grants.sql, sql/postgresql/006_truncate_revokes_grants.sql:
// the bulk writes that fire no UPDATE or DELETE row trigger. SQLite's REPLACE
// deletes the old row without its DELETE triggers; PostgreSQL's TRUNCATE
// fires no row trigger at all.
BOOST_AUTO_TEST_CASE(a_user_replaced_or_truncated_by_sql_loses_its_grants)
{
    auto const t = now();
    db->add_user(user("alice"));
    db->add_user(user("bob"));
    db->upsert_grant(make_grant("192.0.2.1", "alice", t, t + 600));
    db->upsert_grant(make_grant("192.0.2.3", "bob", t, t + 600));
    std::string detail = "user deleted";
    if (pg()) {
        sql->must("TRUNCATE users");
        BOOST_TEST(db->list_grants(true, t).empty());
    } else {
        // The same row again (REPLACE of an unchanged user) revokes nothing.
        sql->must(std::string("REPLACE INTO users (name, password_hash) VALUES ('bob', '") + some_hash + "')");
        sql->must(std::string("INSERT OR REPLACE INTO users (name, password_hash, disabled) VALUES ('alice', '") +
                  some_hash + "', 1)");
        detail = "user replaced";
        BOOST_TEST(db->active_grants_of_user("alice", t).empty());
        BOOST_TEST(db->active_grants_of_user("bob", t).size() == 1u);
        // Statements that insert nothing revoke nothing either, though
        // the row they name differs: a plain INSERT that fails on the
        // name, OR IGNORE, OR FAIL, DO NOTHING, and an upsert's DO UPDATE
        // of other columns (its UPDATE triggers judge it).
        db->upsert_grant(make_grant("192.0.2.4", "alice", t, t + 600));
        std::string other(some_hash);
        other.back() = other.back() == 'a' ? 'b' : 'a';
        auto const values = "(name, password_hash) VALUES ('alice', '" + other + "')";
        BOOST_TEST(!sql->exec("INSERT INTO users " + values).empty());
        BOOST_TEST(!sql->exec("INSERT OR FAIL INTO users " + values).empty());
        sql->must("INSERT OR IGNORE INTO users " + values);
        sql->must("INSERT INTO users " + values + " ON CONFLICT DO NOTHING");
        sql->must("INSERT INTO users (name, disabled) VALUES ('alice', 1) ON CONFLICT (name) DO UPDATE"
                  " SET apop_only = 0");
        BOOST_TEST(db->active_grants_of_user("alice", t).size() == 1u);
        // The next REPLACE of the name judges against the row it replaces,
        // not one those statements left remembered.
        sql->must(std::string("REPLACE INTO users (name, password_hash, disabled) VALUES ('alice', '") + some_hash +
                  "', 1)");
        BOOST_TEST(db->active_grants_of_user("alice", t).empty());
    }
    std::vector<std::string> rows;
    for (auto const& a : db->list_audit(100)) rows.push_back(a.event + " " + a.address + " " + a.user + " " + a.detail);
    std::sort(rows.begin(), rows.end());
    std::vector<std::string> want{"revoke 192.0.2.1 alice " + detail};
    if (pg()) want.push_back("revoke 192.0.2.3 bob " + detail);
    else want.push_back("revoke 192.0.2.4 alice " + detail);
    BOOST_TEST(rows == want, boost::test_tools::per_element());
}

// sql/007_replace_by_update_or_rowid.sql: the other rows SQLite's REPLACE
// deletes without DELETE triggers. A rename onto another user's name, and a
// row put at another user's rowid by INSERT or UPDATE.
BOOST_AUTO_TEST_CASE(a_user_replaced_by_a_rename_or_a_rowid_loses_its_grants)
{
    if (pg()) return;  // no REPLACE: a rename onto a name fails on the key (test below)
    auto const t = now();
    for (auto const* n : {"alice", "bob", "carol", "dave", "erin"}) db->add_user(user(n));
    std::string other(some_hash);
    other.back() = other.back() == 'a' ? 'b' : 'a';
    sql->must("UPDATE users SET password_hash = '" + other + "' WHERE name = 'alice'");
    db->upsert_grant(make_grant("192.0.2.1", "alice", t, t + 600));
    db->upsert_grant(make_grant("192.0.2.2", "bob", t, t + 600));
    db->upsert_grant(make_grant("192.0.2.3", "carol", t, t + 600));
    db->upsert_grant(make_grant("192.0.2.4", "dave", t, t + 600));
    db->upsert_grant(make_grant("192.0.2.5", "erin", t, t + 600));
    auto const rowid = [&](char const* n) {
        return std::to_string(sql->scalar(std::string("SELECT rowid FROM users WHERE name = '") + n + "'"));
    };
    auto const revoked = [&] {
        std::vector<std::string> rows;
        for (auto const& a : db->list_audit(100))
            if (a.event == "revoke") rows.push_back(a.user + " " + a.detail);
        std::sort(rows.begin(), rows.end());
        return rows;
    };
    // Changes that move no row onto another revoke nothing new: a rename to
    // the same name, a rowid nobody has, an insert with a rowid of its own.
    sql->must("UPDATE OR REPLACE users SET name = name, rowid = rowid WHERE name = 'erin'");
    sql->must("UPDATE OR REPLACE users SET rowid = 1000 WHERE name = 'erin'");
    sql->must(std::string("INSERT OR REPLACE INTO users (rowid, name, password_hash) VALUES (2000, 'frank', '") +
              some_hash + "')");
    BOOST_TEST(revoked().empty(), revoked().size());
    // alice (another password) is bob now: bob's login no longer relays.
    sql->must("UPDATE OR REPLACE users SET name = 'bob' WHERE name = 'alice'");
    BOOST_TEST(db->active_grants_of_user("bob", t).empty());
    BOOST_TEST(db->active_grants_of_user("alice", t).empty());  // the rename's own revocation
    // A row put at carol's rowid deletes carol.
    sql->must("INSERT OR REPLACE INTO users (rowid, name, password_hash) VALUES (" + rowid("carol") + ", 'gina', '" +
              some_hash + "')");
    BOOST_TEST(db->active_grants_of_user("carol", t).empty());
    // A row moved to dave's rowid deletes dave.
    sql->must("UPDATE OR REPLACE users SET rowid = " + rowid("dave") + " WHERE name = 'gina'");
    BOOST_TEST(db->active_grants_of_user("dave", t).empty());
    BOOST_TEST(db->active_grants_of_user("erin", t).size() == 1u);
    BOOST_TEST(revoked() == (std::vector<std::string>{"alice user renamed", "bob user replaced",
                                                       "carol user replaced", "dave user replaced"}),
               boost::test_tools::per_element());
    BOOST_TEST(sql->scalar("SELECT count(*) FROM users_replaced") == 0);
}

// users_touch recursed for ever under recursive_triggers (an administrator's
// pragma): an UPDATE in the second the row was stamped failed.
BOOST_AUTO_TEST_CASE(a_user_updated_twice_in_a_second_under_recursive_triggers)
{
    if (pg()) return;  // PostgreSQL stamps in a BEFORE trigger
    db->add_user(user("alice"));
    sql->must("PRAGMA recursive_triggers = ON; UPDATE users SET apop_only = 0 WHERE name = 'alice';"
              " UPDATE users SET apop_only = 0 WHERE name = 'alice'");
    sql->must("UPDATE users SET updated_at = 5 WHERE name = 'alice'; UPDATE users SET disabled = 1 WHERE name = 'alice'");
    BOOST_TEST(sql->scalar("SELECT updated_at > 5 FROM users WHERE name = 'alice'") == 1);
}

// A client's name holding a NUL is no user, on either engine; PostgreSQL's
// text cannot take it, and the lookup was a store failure there.
BOOST_AUTO_TEST_CASE(a_name_holding_a_nul_is_no_user)
{
    db->add_user(user("al"));
    BOOST_TEST(!db->find_user(std::string("al\0ice", 6)).has_value());
    BOOST_TEST(db->find_user("al").has_value());
}

BOOST_AUTO_TEST_CASE(a_rename_onto_another_user_fails_and_revokes_nothing)
{
    auto const t = now();
    db->add_user(user("alice"));
    db->add_user(user("bob"));
    db->upsert_grant(make_grant("192.0.2.2", "bob", t, t + 600));
    db->upsert_grant(make_grant("192.0.2.1", "alice", t, t + 600));
    BOOST_TEST(!sql->exec("UPDATE users SET name = 'bob' WHERE name = 'alice'").empty());
    if (!pg()) sql->must("UPDATE OR IGNORE users SET name = 'bob' WHERE name = 'alice'");
    BOOST_TEST(db->active_grants_of_user("bob", t).size() == 1u);
    BOOST_TEST(db->active_grants_of_user("alice", t).size() == 1u);
}

// On PostgreSQL a TRUNCATE, which fires no DELETE trigger (on SQLite, which
// has none, the DELETE it stands for).
BOOST_AUTO_TEST_CASE(a_truncate_of_relay_grants_forgets_their_logins)
{
    auto const t = now();
    db->add_user(user("alice"));
    db->upsert_grant(make_grant("192.0.2.1", "alice", t, t + 600));
    sql->must(pg() ? "TRUNCATE relay_grants" : "DELETE FROM relay_grants");
    db->upsert_grant(make_grant("192.0.2.1", "bob", t, t + 600));
    auto const grants = db->list_grants(true, t);
    BOOST_TEST_REQUIRE(grants.size() == 1u);
    BOOST_TEST(grants[0].sharing_users == 1);  // bob alone: alice's login went with her grant
}

BOOST_AUTO_TEST_CASE(changes_that_keep_the_login_revoke_nothing)
{
    auto const t = now();
    auto alice = user("alice");
    db->add_user(alice);
    db->upsert_grant(make_grant("192.0.2.1", "alice", t, t + 600));
    db->update_user(alice);  // the same password again
    sql->must("UPDATE users SET disabled = false WHERE name = 'alice'");
    sql->must("UPDATE users SET apop_only = false, password_hash = password_hash WHERE name = 'alice'");
    BOOST_TEST(db->active_grants_of_user("alice", t).size() == 1u);
    BOOST_TEST(db->list_audit(10).empty());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// `popgate db copy`: read_site on one database, write_site on another. The
// other end is a SQLite file, so the PostgreSQL run copies across engines,
// both ways.
namespace {
struct copy_fixture : both_fixture {
    std::unique_ptr<store> other = open_sqlite_store(backend.dir() / "other.db");
};

// Every column of every row, network ids aside (each database numbers its own).
std::vector<std::string> describe(site_rows const& s)
{
    auto const n = [](std::int64_t v) { return std::to_string(v); };
    auto const o = [](std::optional<std::int64_t> v) { return v ? std::to_string(*v) : std::string("-"); };
    std::vector<std::string> out;
    for (auto const& u : s.users)
        out.push_back("user " + u.name + " " + u.password_hash.value_or("-") + " " + u.shared_secret.value_or("-") +
                      " " + n(u.disabled) + n(u.apop_only) + " " + n(u.created_at) + " " + n(u.updated_at));
    for (auto const& w : s.networks)
        out.push_back("network " + w.cidr + " '" + w.note + "' " + n(w.created_at) + " " + o(w.expires_at));
    for (auto const& g : s.grants)
        out.push_back("grant " + g.address + " " + g.user + " " + g.method + " " + n(g.tls) + " " + g.listener + " " +
                      n(g.granted_at) + " " + n(g.expires_at) + " " + n(g.hits) + " " + o(g.last_used) + " " +
                      n(g.quota_hour) + " " + n(g.quota_messages) + " " + n(g.quota_recipients));
    for (auto const& l : s.logins)
        out.push_back("login " + l.address + " " + l.user + " " + n(l.last_login) + " " + n(l.expires_at));
    std::sort(out.begin(), out.end());  // the engines order addresses differently
    return out;
}
}  // namespace

BOOST_FIXTURE_TEST_SUITE(store_site_copy, copy_fixture,
                         *boost::unit_test::label("unit") * boost::unit_test::label("both"))

BOOST_AUTO_TEST_CASE(every_column_is_kept_there_and_back)
{
    auto const t = now();
    auto alice = user("alice");
    alice.shared_secret = "tanstaaf";
    alice.apop_only = true;
    db->add_user(alice);
    auto bob = user("bob");
    bob.password_hash.reset();
    bob.shared_secret = "s";
    bob.disabled = true;
    db->add_user(bob);
    sql->must("UPDATE users SET created_at = 1000000000, updated_at = 1000000001 WHERE name = 'alice'");
    db->add_network({0, "10.0.0.0/8", "lan", 0, std::nullopt});
    db->add_network({0, "2001:db8::1", "one host", 0, t + 3600});
    auto g = make_grant("192.0.2.1", "alice", t - 60, t + 600);
    g.tls = true;
    g.method = "apop";
    g.listener = "pop3s";
    db->upsert_grant(g);
    db->upsert_grant(make_grant("2001:db8:1:2::", "carol", t - 30, t + 900));
    db->upsert_grant(make_grant("2001:db8:1:2::", "dave", t - 20, t + 900));
    db->upsert_grant(make_grant("192.0.2.9", "alice", t - 900, t - 1));  // expired: stays behind
    apply_ops(*db, {grant_touch{"192.0.2.1", t - 5, 7, t - t % 3600, 2, 3}});

    auto const site = db->read_site(t);
    BOOST_TEST(site.users.size() == 2u);
    BOOST_TEST(site.networks.size() == 2u);
    BOOST_TEST(site.grants.size() == 2u);
    BOOST_TEST(site.logins.size() == 3u);
    auto const want = describe(site);
    BOOST_TEST(std::count(want.begin(), want.end(),
                          "grant 192.0.2.1 alice apop 1 pop3s " + std::to_string(t - 60) + " " +
                              std::to_string(t + 600) + " 7 " + std::to_string(t - 5) + " " +
                              std::to_string(t - t % 3600) + " 2 3") == 1);
    BOOST_TEST(std::count(want.begin(), want.end(), "user alice " + std::string(some_hash) +
                                                        " tanstaaf 01 1000000000 1000000001") == 1);

    other->write_site(site, false);
    BOOST_TEST(describe(other->read_site(t)) == want, boost::test_tools::per_element());

    // Back: a database that holds rows is refused, and left as it was...
    db->add_user(user("zed"));
    auto const before = describe(db->read_site(t));
    auto const back = other->read_site(t);
    try {
        db->write_site(back, false);
        BOOST_ERROR("a database holding rows was overwritten without replace");
    } catch (store_error const& e) {
        BOOST_TEST((e.code() == store_errc::constraint));
        BOOST_TEST(std::string(e.what()).find("use --replace") != std::string::npos, e.what());
    }
    BOOST_TEST(describe(db->read_site(t)) == before, boost::test_tools::per_element());
    // ...unless replaced, which drops what was there.
    db->write_site(back, true);
    BOOST_TEST(describe(db->read_site(t)) == want, boost::test_tools::per_element());
    BOOST_TEST(!db->find_user("zed").has_value());
}

BOOST_AUTO_TEST_SUITE_END()
