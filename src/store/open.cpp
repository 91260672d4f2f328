#include "popgate/store/open.hpp"

#include "popgate/config/config.hpp"

namespace popgate::store {

std::unique_ptr<store> open_store(std::string const& database, open_options const& o)
{
    if (config::is_postgresql_uri(database)) {
        pg_options p;
        p.migrate = o.migrate;
        p.accept_older = o.accept_older;
        p.statement_timeout = o.busy_timeout;
        p.watch_networks = o.watch_networks;
        p.max_connections = o.max_connections;
        return open_pg_store(database, p);
    }
    sqlite_options s;
    s.migrate = o.migrate;
    s.accept_older = o.accept_older;
    s.must_exist = o.must_exist;
    s.busy_timeout = o.busy_timeout;
    s.keep_wal_files = o.keep_wal_files;
    return open_sqlite_store(database, s);
}

std::string database_label(std::string const& database)
{
    if (config::looks_like_conninfo(database)) return "(a libpq key=value string, not shown)";
    if (config::looks_like_uri_without_slashes(database))
        return "(a postgresql: string that is no URI, not shown)";
    // Any URI, not only one popgate takes ("Postgresql://user:pw@..."
    // differs in case alone): its password is not shown either.
    if (database.find("://") == std::string::npos) return database;
    // "u:pw@h://x" is no URI to redact: its password would stay.
    return config::uri_scheme(database).empty() ? "(a string with '://', not shown)" : redact_uri(database);
}

}  // namespace popgate::store
