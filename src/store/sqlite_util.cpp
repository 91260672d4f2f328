#include "sqlite_util.hpp"

#include "popgate/metrics/catalog.hpp"

namespace popgate::store::detail {

void throw_sqlite(sqlite3* db, int rc, std::string_view what)
{
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    // Constraint names in sql/ are written as explanations; drop SQLite's
    // prefix so the administrator reads just the rule that was broken.
    constexpr std::string_view check_prefix = "CHECK constraint failed: ";
    if (msg.starts_with(check_prefix)) msg.erase(0, check_prefix.size());
    int const primary = rc & 0xff;
    store_errc code = store_errc::unavailable;
    if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
        code = store_errc::busy;
        msg = "database is locked by another writer (" + msg + ")";
    } else if (primary == SQLITE_CONSTRAINT) {
        code = (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
                   ? store_errc::duplicate
                   : store_errc::constraint;
    }
    if (!what.empty() && code == store_errc::unavailable) msg = std::string(what) + ": " + msg;
    // What is wrong with the file itself names the file: "file is not a
    // database" alone does not say which.
    if (db && (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT || primary == SQLITE_READONLY ||
               primary == SQLITE_CANTOPEN || primary == SQLITE_IOERR || primary == SQLITE_FULL ||
               primary == SQLITE_PERM))
        if (char const* file = sqlite3_db_filename(db, "main"); file && *file) msg += " (" + std::string(file) + ")";
    if (code == store_errc::busy || code == store_errc::unavailable)
        metrics::database_errors.with({code == store_errc::busy ? "busy" : "unavailable"}).inc();
    throw store_error(code, msg);
}

stmt::stmt(sqlite3* db, std::string_view sql) : db_(db)
{
    int const rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                                      SQLITE_PREPARE_PERSISTENT, &s_, nullptr);
    if (rc != SQLITE_OK) throw_sqlite(db, rc, "prepare");
}

stmt::~stmt() { sqlite3_finalize(s_); }

stmt& stmt::bind(int i, std::string_view v)
{
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
}
stmt& stmt::bind(int i, std::int64_t v)
{
    sqlite3_bind_int64(s_, i, v);
    return *this;
}
stmt& stmt::bind_opt(int i, std::optional<std::string> const& v)
{
    return v ? bind(i, std::string_view(*v)) : bind_null(i);
}
stmt& stmt::bind_opt(int i, std::optional<std::int64_t> const& v)
{
    return v ? bind(i, *v) : bind_null(i);
}
stmt& stmt::bind_null(int i)
{
    sqlite3_bind_null(s_, i);
    return *this;
}

bool stmt::step()
{
    int const rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    int const ext = sqlite3_extended_errcode(db_);
    throw_sqlite(db_, ext ? ext : rc, "");
}

void stmt::reset()
{
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
}

std::int64_t stmt::i64(int col) const { return sqlite3_column_int64(s_, col); }
std::string stmt::text(int col) const
{
    auto const* p = reinterpret_cast<char const*>(sqlite3_column_text(s_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col))) : std::string{};
}
std::optional<std::string> stmt::opt_text(int col) const
{
    if (sqlite3_column_type(s_, col) == SQLITE_NULL) return std::nullopt;
    return text(col);
}
std::optional<std::int64_t> stmt::opt_i64(int col) const
{
    if (sqlite3_column_type(s_, col) == SQLITE_NULL) return std::nullopt;
    return i64(col);
}

void exec(sqlite3* db, char const* sql)
{
    char* err = nullptr;
    int const rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
        std::string msg = err ? err : sqlite3_errstr(rc);
        sqlite3_free(err);
        int const ext = sqlite3_extended_errcode(db);
        (void)msg;
        throw_sqlite(db, ext ? ext : rc, "");
    }
}

transaction::transaction(sqlite3* db) : db_(db) { exec(db_, "BEGIN IMMEDIATE"); }
transaction::~transaction()
{
    if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}
void transaction::commit()
{
    exec(db_, "COMMIT");
    done_ = true;
}

}  // namespace popgate::store::detail
