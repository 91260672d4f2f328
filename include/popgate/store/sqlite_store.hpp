#pragma once
#include "popgate/store/store.hpp"

#include <chrono>
#include <filesystem>
#include <memory>

namespace popgate::store {

struct sqlite_options {
    std::chrono::milliseconds busy_timeout{5000};
    bool migrate = true;      // apply pending migrations on open (the daemon and `db migrate`)
    bool must_exist = false;  // admin commands refuse to create a database by accident
    bool accept_older = false;  // without migrate: report an older schema, not refuse it
    // How often a read checks that the path still names the open file (a
    // stat); writes check every time, just before they commit.
    std::chrono::milliseconds file_check_interval{2000};
    // Leave the -wal and -shm files in place when the last connection closes
    // (SQLITE_FCNTL_PERSIST_WAL): a reader that may not create files in the
    // directory (an MTA's lookup table, storage.group) then still finds them
    // while nobody else has the database open.
    bool keep_wal_files = false;
};

// Opens (and by default migrates) the database; throws store_error with a
// message fit for an administrator. Thread-safe: each call borrows a connection
// from a small pool, so concurrent readers never wait for one another (WAL).
std::unique_ptr<store> open_sqlite_store(std::filesystem::path const& path, sqlite_options const& o = {});

}  // namespace popgate::store
