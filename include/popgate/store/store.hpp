#pragma once
// The storage interface shared by the daemon and the admin command. SQLite is the
// embedded implementation (sqlite_store.hpp), PostgreSQL the one a site scales
// out on (pg_store.hpp); dialect-specific SQL stays in each. Calls block: the
// daemon runs them on its blocking pool (io/blocking.hpp), never on an I/O
// thread, except for SQLite's indexed reads of the relay decision
// (crosses_network()).
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace popgate::store {

using unix_time = std::int64_t;

struct user_record {
    std::string name;
    std::optional<std::string> password_hash;  // crypt(3)
    std::optional<std::string> shared_secret;  // APOP / CRAM-MD5
    bool disabled = false;
    bool apop_only = false;
    unix_time created_at = 0;
    unix_time updated_at = 0;
};

// What a login checked: the user's password hash and shared secret as it
// read them (a change of either revokes the user's grants: sql/005).
struct credentials {
    std::optional<std::string> password_hash;
    std::optional<std::string> shared_secret;
    bool operator==(credentials const&) const = default;
};

struct grant {
    std::string address;  // net::grant_key(...).to_string()
    std::string user;
    std::string method;   // pass | apop | sasl-plain ... | cli | sql
    bool tls = false;
    std::string listener;
    unix_time granted_at = 0;
    unix_time expires_at = 0;
    std::int64_t hits = 0;
    std::optional<unix_time> last_used;
    // Quota counters (sql/005): relayed messages and recipients in the clock
    // hour that starts at quota_hour (a count for an older hour is zero).
    unix_time quota_hour = 0;
    std::int64_t quota_messages = 0;
    std::int64_t quota_recipients = 0;
    // Read by list_grants only: users with an unexpired login at this address
    // (relay_grant_logins), the grant's own user included.
    std::int64_t sharing_users = 0;
    // Written with the grant, in the same step: its 'grant' audit row
    // (address: the client's, which an IPv6 grant's prefix is not), so that a
    // grant refused in the store (needs_user) leaves no row saying it was
    // made. No row when audit_detail is empty.
    std::string audit_address;
    std::string audit_detail;
    // Made by popgate's own login of `user`: written only while that user
    // can still log in (exists, not disabled), checked in the grant's
    // transaction. The users triggers revoke a user's grants when the user
    // is disabled or deleted, but cannot see a grant not yet committed: a
    // login whose password check ran before the change would leave one.
    bool needs_user = false;
    // With needs_user, when set: the user's password hash and shared secret
    // must still be these, as the login read them. A password changed (or
    // the user replaced) after the check and before this commit is a change
    // the triggers cannot revoke either.
    std::optional<credentials> checked{};
};

// Whether writing `g` replaces a row of its address that lasts longer: an
// administrator's grant (cli, sql) does; a login's does not, so a login
// never shortens a standing grant nor takes it over (as its user's, a
// password change would then revoke it).
inline bool overwrites(grant const& g) noexcept { return g.method == "cli" || g.method == "sql"; }

inline std::string user_gone_meanwhile(grant const& g)
{
    return "relay_grants: user '" + g.user + "' was disabled or deleted during the login; no grant";
}

inline std::string credentials_changed_meanwhile(grant const& g)
{
    return "relay_grants: user '" + g.user + "' was given another password or shared secret during the login; "
           "no grant";
}


struct network {
    std::int64_t id = 0;
    std::string cidr;
    std::string note;
    unix_time created_at = 0;
    std::optional<unix_time> expires_at;
};

struct audit_entry {
    std::int64_t id = 0;
    unix_time at = 0;
    std::string event;  // grant | revoke | deny | auth-fail | admin
    std::string address;
    std::string user;
    std::string detail;
};

// The writes the daemon makes on every login and every relayed or refused
// recipient, applied many at a time by write_batch (group commit).
struct grant_touch {
    std::string address;
    unix_time at = 0;         // last_used
    std::int64_t count = 1;   // added to hits
    // Added to the quota counters when they are for quota_hour; counters for
    // an older hour start again from these; 0: no quota use to record.
    unix_time quota_hour = 0;
    std::int64_t messages = 0;
    std::int64_t recipients = 0;
};
// relay.max_grants_per_user = "replace-oldest": after the grant at `keep`
// is written, `user` holds at most `max` unexpired grants; the oldest others
// are deleted, each with a 'revoke' audit row carrying `detail`.
struct grant_cap {
    std::string user;
    std::string keep;
    std::size_t max = 0;
    unix_time at = 0;  // now: grants expired by then are not counted
    std::string detail;
};
struct audit_record {
    std::string event;
    std::string address;
    std::string user;
    std::string detail;
};
using write_op = std::variant<grant, grant_touch, audit_record, grant_cap>;

// Who logged in at a granted address (relay_grant_logins).
struct grant_login {
    std::string address;
    std::string user;
    unix_time last_login = 0;
    unix_time expires_at = 0;
};

// What `popgate db copy` moves from one database to another: the rows a site
// is made of (audit history stays behind).
struct site_rows {
    std::vector<user_record> users;
    std::vector<network> networks;
    std::vector<grant> grants;  // unexpired only
    std::vector<grant_login> logins;  // of those grants, unexpired
};

enum class store_errc { not_found, duplicate, constraint, busy, unavailable, schema_too_new };

class store_error : public std::runtime_error {
public:
    store_error(store_errc c, std::string const& what) : std::runtime_error(what), code_(c) {}
    store_errc code() const noexcept { return code_; }

private:
    store_errc code_;
};

// Whether the user row `found` (as put_grant reads it: none when the user is
// gone or disabled) still lets `g` be written; throws store_error
// (constraint) naming why not.
inline void check_grant_user(grant const& g, std::optional<credentials> const& found)
{
    if (!found) throw store_error(store_errc::constraint, user_gone_meanwhile(g));
    if (g.checked && *g.checked != *found) throw store_error(store_errc::constraint, credentials_changed_meanwhile(g));
}

class store {
public:
    virtual ~store() = default;

    // users
    virtual std::optional<user_record> find_user(std::string_view name) = 0;
    virtual void add_user(user_record const& u) = 0;      // store_errc::duplicate
    virtual void update_user(user_record const& u) = 0;   // store_errc::not_found
    virtual bool delete_user(std::string_view name) = 0;
    virtual std::vector<user_record> list_users() = 0;
    // Adds every user in one transaction: all or nothing.
    virtual void import_users(std::span<user_record const> users, bool replace) = 0;

    // relay grants
    virtual void upsert_grant(grant const& g) = 0;  // committed on return
    // The first unexpired grant among `keys` (the client's full address and its
    // IPv6-prefix key), or nothing.
    virtual std::optional<grant> find_active_grant(std::span<std::string const> keys, unix_time now) = 0;
    virtual void touch_grant(std::string const& address, unix_time now) = 0;
    virtual bool delete_grant(std::string_view address) = 0;
    virtual std::size_t delete_grants_of_user(std::string_view user) = 0;
    // The user's unexpired grants, oldest first (indexed read).
    virtual std::vector<grant> active_grants_of_user(std::string_view user, unix_time now) = 0;
    virtual std::vector<grant> list_grants(bool include_expired, unix_time now) = 0;
    // How many grants are unexpired at `now` (a range of the expires_at index).
    virtual std::size_t count_active_grants(unix_time now) = 0;
    virtual std::size_t purge_expired_grants(unix_time now) = 0;
    // The addresses of unexpired grants written as IPv6. IPv4 ones need no
    // look: the table rules have allowed only the canonical dotted quad since
    // schema 1, while an IPv6 row from before schema 3 may be spelt in a way
    // that never matches (relay::decider::check_rows).
    virtual std::vector<std::string> ipv6_grant_addresses(unix_time now) = 0;

    // allowed networks
    virtual std::int64_t add_network(network const& n) = 0;  // store_errc::duplicate
    virtual bool delete_network(std::string_view cidr) = 0;
    virtual std::vector<network> list_networks() = 0;
    // Changes whenever any row of allowed_networks changes, by whatever writer.
    virtual std::int64_t network_generation() = 0;

    // audit
    virtual void audit(std::string_view event, std::string_view address, std::string_view user,
                       std::string_view detail) = 0;
    virtual std::vector<audit_entry> list_audit(std::size_t limit) = 0;
    virtual std::size_t purge_audit(std::size_t keep_rows, unix_time older_than) = 0;

    // Applies `ops` in order in one transaction: one commit for many logins.
    // An op refused by a constraint is undone alone (statement-level
    // rollback) and its message is put in errors[i] (resized to ops.size(),
    // empty = applied); the others commit. Throws store_error when the
    // transaction itself cannot begin, goes on or commit: then nothing was
    // applied. A database locked by another writer is waited for until
    // `deadline` (default: the store's busy timeout from now), then
    // store_errc::busy.
    virtual void write_batch(std::span<write_op const> ops, std::vector<std::string>& errors,
                             std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) = 0;

    // The database file must stay the one the store opened. When its path
    // names another file or none (deleted, replaced), every call throws
    // store_error (unavailable) until the file is back, or until this is
    // called (the daemon's SIGHUP): it then opens what the path names now,
    // creating and migrating it as at start when the store was opened so.
    // True when it reopened.
    virtual bool reopen_if_moved() = 0;

    virtual int schema_version() = 0;
    virtual bool integrity_ok() = 0;
    // "SQLite 3.40.1", "PostgreSQL 15.18": for `db check`.
    virtual std::string engine_version() = 0;
    // True when every call is a round trip to a server: the daemon then makes
    // none on an I/O thread (the relay decision included) but runs them on its
    // blocking pool. SQLite's indexed reads are cheap enough for the I/O thread.
    virtual bool crosses_network() const noexcept { return false; }

    // `db copy`: the users, networks, unexpired grants and their logins.
    virtual site_rows read_site(unix_time now) = 0;
    // Writes them in one transaction, keeping every column (times, hits,
    // quota counts). Refuses (store_errc::constraint) a database that already
    // holds users, networks or grants unless `replace`, which deletes those
    // first (in the same transaction).
    virtual void write_site(site_rows const& rows, bool replace) = 0;
};

// Unix seconds by the database's clock: this host's wall clock on SQLite
// (the file is local); after follow_server_clock(), the server's time then
// plus the monotonic time since, so a step of this host's clock (NTP
// fixing it after boot) changes nothing.
unix_time now() noexcept;
// On PostgreSQL every node judges a grant's expiry, a quota's hour and a
// purge by one clock, the server's, as the SQL function an MTA's pgsql:
// map calls does: a node whose clock ran slow relayed on grants expired
// for every other. The server's Unix milliseconds, read at `at`.
void follow_server_clock(std::int64_t server_unix_ms, std::chrono::steady_clock::time_point at) noexcept;

}  // namespace popgate::store
