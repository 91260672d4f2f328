#pragma once
// Opens the store a `storage.database` value names: a file path is SQLite, a
// postgresql:// URI PostgreSQL.
#include "popgate/store/pg_store.hpp"
#include "popgate/store/sqlite_store.hpp"

#include <memory>
#include <string>

namespace popgate::store {

struct open_options {
    bool migrate = true;      // the daemon and `db migrate`
    bool must_exist = false;  // admin commands: never create a database by accident
    // Without migrate: open an older schema too (`db version`, `db check`,
    // which only report it); else one is refused with "run db migrate".
    bool accept_older = false;
    std::chrono::milliseconds busy_timeout{5000};  // SQLite's lock wait; PostgreSQL's statement timeout
    bool keep_wal_files = false;                   // SQLite (storage.group)
    bool watch_networks = false;                   // PostgreSQL, the daemon (LISTEN/NOTIFY)
    std::size_t max_connections = 4;               // PostgreSQL
};

std::unique_ptr<store> open_store(std::string const& database, open_options const& o);

// For log lines: a URI without its password; a path as it is.
std::string database_label(std::string const& database);

}  // namespace popgate::store
