#include "popgate/store/migrate.hpp"

#include "popgate/migrations_data.hpp"
#include "popgate/store/store.hpp"
#include "sqlite_util.hpp"

#include <array>

namespace popgate::store {
namespace {

auto const& table()
{
    static auto const t = [] {
        std::array<migration, generated::migrations.size()> out{};
        for (std::size_t i = 0; i < out.size(); ++i)
            out[i] = {generated::migrations[i].version, generated::migrations[i].name,
                      generated::migrations[i].sql};
        return out;
    }();
    return t;
}

}  // namespace

std::span<migration const> known_migrations() noexcept { return table(); }

int latest_schema_version() noexcept
{
    return table().empty() ? 0 : table().back().version;
}

int current_schema_version(sqlite3* db)
{
    detail::stmt has(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'");
    has.step();
    if (has.i64(0) == 0) return 0;
    detail::stmt q(db, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    q.step();
    return static_cast<int>(q.i64(0));
}

void refuse_if_newer(sqlite3* db)
{
    int const current = current_schema_version(db);
    int const latest = latest_schema_version();
    if (current > latest)
        throw store_error(store_errc::schema_too_new,
                          "database schema version " + std::to_string(current) +
                              " is newer than this popgate understands (" + std::to_string(latest) +
                              "); upgrade popgate or use the matching release");
}

int migrate(sqlite3* db, int target)
{
    refuse_if_newer(db);
    int const latest = latest_schema_version();
    if (target < 0 || target > latest) target = latest;
    // A database already there is only read: every open of the daemon and
    // of the CLI comes here, and a write transaction would wait for an
    // administrator's open one (a `grant list` held up by a BEGIN in
    // sqlite3) where a reader does not.
    if (current_schema_version(db) >= target) return 0;
    detail::exec(db, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                     " applied_at INTEGER NOT NULL DEFAULT (unixepoch())) STRICT");
    int applied = 0;
    for (auto const& m : known_migrations()) {
        if (m.version > target) break;
        detail::transaction tx(db);
        // Read the version inside the write transaction: two processes starting
        // at once must not both apply the same migration.
        refuse_if_newer(db);
        if (m.version <= current_schema_version(db)) continue;
        detail::exec(db, std::string(m.sql).c_str());
        detail::stmt rec(db, "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)");
        rec.bind(1, std::int64_t{m.version}).bind(2, m.name).run();
        tx.commit();
        ++applied;
    }
    return applied;
}

}  // namespace popgate::store
