#pragma once
// The PostgreSQL store: the same tables and meaning as SQLite's, for sites
// where several popgate nodes (and the MTAs beside them) share one database.
#include "popgate/store/store.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

namespace popgate::store {

struct pg_options {
    // Apply pending migrations on open (the daemon and `db migrate`); else a
    // database without the current schema is refused (admin commands).
    bool migrate = true;
    bool accept_older = false;  // without migrate: report an older schema, not refuse it
    // Connections the pool keeps at most: the daemon's blocking threads, its
    // writer and the network watcher each use one at a time.
    std::size_t max_connections = 4;
    // How long a statement may run, and a call may wait for a free connection.
    std::chrono::milliseconds statement_timeout{5000};
    // The daemon: hold a connection that LISTENs on popgate_networks, so the
    // relay decision's in-memory network list is reloaded when any node or
    // psql changes allowed_networks; also re-read every network_check_interval
    // (and after every reconnect) in case a notification was missed.
    bool watch_networks = false;
    std::chrono::milliseconds network_check_interval{30000};
};

// Connects (and by default migrates); throws store_error with a message fit
// for an administrator. Thread-safe: each call borrows a connection.
std::unique_ptr<store> open_pg_store(std::string const& uri, pg_options const& o = {});

// The URI for log lines and messages: any password taken out.
std::string redact_uri(std::string_view uri);

}  // namespace popgate::store
