#pragma once
// The store backend a unit test runs on, and an administrator's SQL shell on
// the same database (the sqlite3 shell, psql).
//
// Test suites labelled "both" hold the backend-neutral cases: unit.<dir>
// runs them on a fresh SQLite file per case; unit.<dir>_pg runs only them
// (--run_test=@both) with POPGATE_TEST_PG_DIR set by CTest to the directory of
// the fixture `postgres` (tests/support/private_postgres.py): then every case
// uses the PostgreSQL database named in uri.txt there, emptied before the
// case. When that variable is set and the server cannot be reached the case
// fails; it is never skipped.
//
// SQL written for the shell must read the same on both engines: quote the
// column "user", write booleans as true/false, times with unixepoch().
#include "popgate/store/open.hpp"

#include "temp_dir.hpp"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace popgate::test {

// under_test: PostgreSQL when POPGATE_TEST_PG_DIR is set, else SQLite.
enum class backend { sqlite, postgresql, under_test };

// POPGATE_TEST_PG_DIR, or empty.
inline std::string pg_test_dir()
{
    char const* d = std::getenv("POPGATE_TEST_PG_DIR");
    return d ? d : "";
}

// An administrator's session on the database: its own connection, as a
// shell beside the daemon would have.
class sql_shell {
public:
    virtual ~sql_shell() = default;
    // Runs one or more statements; "" on success, else the engine's message.
    virtual std::string exec(std::string const& sql) = 0;
    // The first column of every row of one query, as text ("NULL" for NULL).
    virtual std::vector<std::string> column(std::string const& sql) = 0;

    void must(std::string const& sql)
    {
        auto const e = exec(sql);
        if (!e.empty()) throw std::runtime_error(sql + " -> " + e);
    }
    std::int64_t scalar(std::string const& sql)
    {
        auto const c = column(sql);
        if (c.empty() || c[0] == "NULL") return -1;
        return std::stoll(c[0]);
    }
    // Holds the tables the store writes locked for writing, as an open
    // transaction of an administrator would, until unlock().
    virtual void lock_writes() = 0;
    void unlock() { must("ROLLBACK"); }
};

class sqlite_shell final : public sql_shell {
public:
    explicit sqlite_shell(std::string const& path)
    {
        if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK)
            throw std::runtime_error("sqlite3_open " + path + ": " + sqlite3_errmsg(db_));
        sqlite3_busy_timeout(db_, 5000);
    }
    ~sqlite_shell() override { sqlite3_close(db_); }
    sqlite_shell(sqlite_shell const&) = delete;
    sqlite_shell& operator=(sqlite_shell const&) = delete;

    std::string exec(std::string const& sql) override
    {
        char* err = nullptr;
        int const rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
        std::string msg = rc == SQLITE_OK ? "" : (err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        if (rc != SQLITE_OK && msg.empty()) msg = "error";
        return msg;
    }
    std::vector<std::string> column(std::string const& sql) override
    {
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
            throw std::runtime_error(sql + " -> " + sqlite3_errmsg(db_));
        std::vector<std::string> out;
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            auto const* t = reinterpret_cast<char const*>(sqlite3_column_text(s, 0));
            out.emplace_back(t ? t : "NULL");
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) throw std::runtime_error(sql + " -> " + sqlite3_errmsg(db_));
        return out;
    }
    void lock_writes() override { must("BEGIN IMMEDIATE"); }

private:
    sqlite3* db_ = nullptr;
};

class pg_shell final : public sql_shell {
public:
    explicit pg_shell(std::string const& conninfo) : c_(PQconnectdb(conninfo.c_str()))
    {
        if (PQstatus(c_) != CONNECTION_OK) {
            std::string const why = PQerrorMessage(c_);
            PQfinish(c_);
            throw std::runtime_error("cannot connect to the test PostgreSQL (" + conninfo + "): " + why);
        }
        PQsetNoticeProcessor(c_, [](void*, char const*) {}, nullptr);
    }
    ~pg_shell() override { PQfinish(c_); }
    pg_shell(pg_shell const&) = delete;
    pg_shell& operator=(pg_shell const&) = delete;

    std::string exec(std::string const& sql) override
    {
        std::unique_ptr<PGresult, void (*)(PGresult*)> r(PQexec(c_, sql.c_str()), PQclear);
        auto const st = PQresultStatus(r.get());
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return "";
        std::string msg = PQresultErrorField(r.get(), PG_DIAG_MESSAGE_PRIMARY) ? PQresultErrorField(r.get(), PG_DIAG_MESSAGE_PRIMARY)
                                                                              : PQerrorMessage(c_);
        return msg.empty() ? "error" : msg;
    }
    std::vector<std::string> column(std::string const& sql) override
    {
        std::unique_ptr<PGresult, void (*)(PGresult*)> r(PQexec(c_, sql.c_str()), PQclear);
        if (PQresultStatus(r.get()) != PGRES_TUPLES_OK)
            throw std::runtime_error(sql + " -> " + PQerrorMessage(c_));
        std::vector<std::string> out;
        for (int i = 0; i < PQntuples(r.get()); ++i)
            out.emplace_back(PQgetisnull(r.get(), i, 0) ? "NULL" : PQgetvalue(r.get(), i, 0));
        return out;
    }
    void lock_writes() override
    {
        // Blocks every INSERT, UPDATE and DELETE on them; reads go on.
        must("BEGIN; LOCK TABLE relay_grants, relay_grant_logins, audit_log IN EXCLUSIVE MODE");
    }

private:
    PGconn* c_;
};

// A fresh, empty, migrated database of the backend under test.
class backend_db {
public:
    explicit backend_db(backend b = backend::under_test)
    {
        auto const dir = b == backend::sqlite ? std::string() : pg_test_dir();
        if (b == backend::postgresql && dir.empty())
            throw std::runtime_error("POPGATE_TEST_PG_DIR is not set: no test PostgreSQL to use");
        if (dir.empty()) {
            database_ = (tmp_.path / "popgate.db").string();
            return;
        }
        database_ = first_line(dir + "/uri.txt");
        admin_ = first_line(dir + "/admin.txt");
        auto sh = shell();
        // Left by a case that failed before its own clean-up.
        (void)sh->exec("DELETE FROM schema_migrations WHERE version >= 900");
        store::open_store(database_, {}).reset();  // the schema, on the first case
        sh->must("TRUNCATE users, relay_grants, relay_grant_logins, allowed_networks, audit_log RESTART IDENTITY");
    }

    bool postgresql() const noexcept { return !admin_.empty(); }
    // What storage.database would say: a file path or a postgresql:// URI.
    std::string const& database() const noexcept { return database_; }
    std::unique_ptr<store::store> open(store::open_options const& o = {}) const
    {
        return store::open_store(database_, o);
    }
    // A new administrator's connection (PostgreSQL: the superuser).
    std::unique_ptr<sql_shell> shell() const
    {
        if (postgresql()) return std::make_unique<pg_shell>(admin_);
        return std::make_unique<sqlite_shell>(database_);
    }
    // A scratch directory of the case's own (also under PostgreSQL).
    std::filesystem::path const& dir() const noexcept { return tmp_.path; }

private:
    static std::string first_line(std::string const& path)
    {
        std::ifstream in(path);
        std::string line;
        if (!std::getline(in, line) || line.empty())
            throw std::runtime_error(path + " is missing or empty: POPGATE_TEST_PG_DIR is set, so the CTest fixture "
                                            "postgres (pg.start) must have started the test PostgreSQL");
        return line;
    }

    temp_dir tmp_{"store"};
    std::string database_;
    std::string admin_;  // PostgreSQL: the superuser's conninfo
};

}  // namespace popgate::test
