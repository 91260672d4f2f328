#pragma once
#include <span>
#include <string_view>

struct sqlite3;

namespace popgate::store {

struct migration {
    int version;
    std::string_view name;
    std::string_view sql;
};

// Every migration compiled into this binary, ascending (from sql/NNN_*.sql).
std::span<migration const> known_migrations() noexcept;
int latest_schema_version() noexcept;

// Current version recorded in schema_migrations (0 for an empty database).
int current_schema_version(sqlite3* db);

// Applies every pending migration, each in its own IMMEDIATE transaction with its
// row in schema_migrations, up to `target` (default: all). Refuses, with
// store_error(schema_too_new), a database newer than this binary knows.
// Returns the number applied.
int migrate(sqlite3* db, int target = -1);

// Throws store_error(schema_too_new) when the database is newer than this binary.
void refuse_if_newer(sqlite3* db);

}  // namespace popgate::store
