#include "popgate/store/sqlite_store.hpp"

#include "popgate/log/log.hpp"
#include "popgate/metrics/catalog.hpp"
#include "popgate/store/copy_rows.hpp"
#include "popgate/store/migrate.hpp"
#include "sqlite_util.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iterator>
#include <limits>
#include <mutex>
#include <thread>
#include <type_traits>
#include <unordered_map>

namespace popgate::store {

namespace {
// The server's Unix milliseconds minus steady_clock's, as last measured;
// `unset` until then (and always on SQLite).
constexpr std::int64_t unset = std::numeric_limits<std::int64_t>::min();
std::atomic<std::int64_t> server_minus_steady_ms{unset};

std::int64_t steady_ms(std::chrono::steady_clock::time_point t) noexcept
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
}  // namespace

unix_time now() noexcept
{
    using namespace std::chrono;
    if (auto const d = server_minus_steady_ms.load(std::memory_order_relaxed); d != unset)
        return (steady_ms(steady_clock::now()) + d) / 1000;
    return duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
}

void follow_server_clock(std::int64_t server_unix_ms, std::chrono::steady_clock::time_point at) noexcept
{
    server_minus_steady_ms.store(server_unix_ms - steady_ms(at), std::memory_order_relaxed);
}

namespace {

using detail::stmt;

struct conn_deleter {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using conn_ptr = std::unique_ptr<sqlite3, conn_deleter>;

// A connection with its prepared statements: preparing costs more than running
// the indexed lookups of a relay decision, so each SQL text is prepared once
// per connection. Statements are declared after the handle: destroyed first.
struct connection {
    conn_ptr db;
    std::unordered_map<char const*, std::unique_ptr<stmt>> stmts;
    std::uint64_t generation = 0;  // of the store's file: a reopen retires older ones
};

// Which file a path names: device and inode.
struct file_id {
    dev_t dev = 0;
    ino_t ino = 0;
    bool operator==(file_id const&) const = default;
};

enum class file_check { cached, now };
enum class file_state { same, deleted, replaced };  // the path against the open file

// A busy handler that waits for another writer until a deadline, with the
// short sleeps of SQLite's own busy timeout, then gives up (SQLITE_BUSY).
int wait_until_deadline(void* arg, int count)
{
    auto const until = *static_cast<std::chrono::steady_clock::time_point const*>(arg);
    auto const now = std::chrono::steady_clock::now();
    if (now >= until) return 0;
    static constexpr int delays_ms[] = {1, 2, 5, 10, 15, 20, 25};
    auto const i = std::min<std::size_t>(static_cast<std::size_t>(count), std::size(delays_ms) - 1);
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(delays_ms[i]), until - now));
    return 1;
}

// Puts wait_until_deadline on a connection for one call, and the connection's
// own busy timeout back afterwards.
class busy_deadline {
public:
    busy_deadline(sqlite3* db, std::chrono::steady_clock::time_point until, std::chrono::milliseconds restore)
        : db_(db), until_(until), restore_(restore)
    {
        sqlite3_busy_handler(db_, wait_until_deadline, &until_);
    }
    ~busy_deadline() { sqlite3_busy_timeout(db_, static_cast<int>(restore_.count())); }
    busy_deadline(busy_deadline const&) = delete;
    busy_deadline& operator=(busy_deadline const&) = delete;

private:
    sqlite3* db_;
    std::chrono::steady_clock::time_point until_;
    std::chrono::milliseconds restore_;
};

conn_ptr open_connection(std::filesystem::path const& path, sqlite_options const& o, bool create)
{
    sqlite3* raw = nullptr;
    // Run as root (the daemon before it switches to server.user, `popgate db
    // migrate` by an administrator), a link where the database file goes is
    // not followed: the directory may be the service account's, which could
    // point it at a file of root's. (SQLITE_OPEN_NOFOLLOW would refuse a link
    // anywhere in the path, /var/lib/popgate -> /srv/... included; SQLite
    // refuses links for -wal and -shm itself.)
    bool const root = ::geteuid() == 0;
    struct stat st {};
    if (root && ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
        metrics::database_errors.with({"unavailable"}).inc();
        throw store_error(store_errc::unavailable,
                          "cannot open database " + path.string() +
                              ": it is a symbolic link, which popgate run as root does not follow; name the file "
                              "itself");
    }
    int const flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    // The database holds password hashes: never world-readable, even briefly.
    mode_t const old = ::umask(077);
    int const rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
    ::umask(old);
    conn_ptr db(raw);
    if (rc != SQLITE_OK) {
        metrics::database_errors.with({"unavailable"}).inc();
        throw store_error(store_errc::unavailable,
                          "cannot open database " + path.string() + ": " +
                              (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
    }
    sqlite3_extended_result_codes(db.get(), 1);
    sqlite3_busy_timeout(db.get(), static_cast<int>(o.busy_timeout.count()));
    if (o.keep_wal_files) {
        int on = 1;
        sqlite3_file_control(db.get(), "main", SQLITE_FCNTL_PERSIST_WAL, &on);
    }
    // WAL: readers (the relay decision, Postfix's read-only lookups) never wait
    // for the writer. synchronous=NORMAL in WAL mode keeps every commit across a
    // process crash; only an OS crash may lose the last transactions.
    detail::exec(db.get(), "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                           " PRAGMA foreign_keys = ON; PRAGMA trusted_schema = OFF;");
    return db;
}

// Every column of relay_grants that read_grant reads, in its order.
#define POPGATE_GRANT_COLUMNS                                                                              \
    "SELECT address, user, method, tls, listener, granted_at, expires_at, hits, last_used, quota_hour," \
    " quota_messages, quota_recipients"

class sqlite_store final : public store {
public:
    sqlite_store(std::filesystem::path path, sqlite_options o) : path_(std::move(path)), opts_(o)
    {
        auto first = open_first();
        id_ = opened_file(first.get());
        pool_.push_back(std::make_unique<connection>(connection{std::move(first), {}, generation_}));
        next_check_.store(check_due_after(std::chrono::steady_clock::now()), std::memory_order_relaxed);
    }

    std::optional<user_record> find_user(std::string_view name) override
    {
        auto c = borrow();
        auto& q = c.prepare("SELECT name, password_hash, shared_secret, disabled, apop_only, created_at, updated_at"
                     " FROM users WHERE name = ?1");
        q.bind(1, name);
        if (!q.step()) return std::nullopt;
        return read_user(q);
    }

    void add_user(user_record const& u) override
    {
        auto c = borrow(file_check::now);
        try {
            insert_user(c.db, u, false);
        } catch (store_error const& e) {
            if (e.code() == store_errc::duplicate)
                throw store_error(store_errc::duplicate, "user '" + u.name + "' already exists");
            throw;
        }
    }

    void update_user(user_record const& u) override
    {
        auto c = borrow(file_check::now);
        auto& q = c.prepare("UPDATE users SET password_hash = ?2, shared_secret = ?3, disabled = ?4, apop_only = ?5,"
                     " updated_at = unixepoch() WHERE name = ?1");
        q.bind(1, u.name).bind_opt(2, u.password_hash).bind_opt(3, u.shared_secret);
        q.bind(4, std::int64_t{u.disabled}).bind(5, std::int64_t{u.apop_only}).run();
        if (sqlite3_changes(c.db) == 0) throw store_error(store_errc::not_found, "no such user '" + u.name + "'");
    }

    bool delete_user(std::string_view name) override
    {
        auto c = borrow(file_check::now);
        auto& q = c.prepare("DELETE FROM users WHERE name = ?1");
        q.bind(1, name).run();
        return sqlite3_changes(c.db) > 0;
    }

    std::vector<user_record> list_users() override
    {
        auto c = borrow();
        auto& q = c.prepare("SELECT name, password_hash, shared_secret, disabled, apop_only, created_at, updated_at"
                     " FROM users ORDER BY name");
        std::vector<user_record> out;
        while (q.step()) out.push_back(read_user(q));
        return out;
    }

    void import_users(std::span<user_record const> users, bool replace) override
    {
        auto c = borrow(file_check::now);
        detail::transaction tx(c.db);
        for (auto const& u : users) {
            try {
                insert_user(c.db, u, replace);
            } catch (store_error const& e) {
                if (e.code() == store_errc::duplicate)
                    throw store_error(store_errc::duplicate,
                                      "user '" + u.name + "' already exists (use --replace to overwrite)");
                throw store_error(e.code(), "user '" + u.name + "': " + e.what());
            }
        }
        tx.commit();
    }

    void upsert_grant(grant const& g) override
    {
        auto c = borrow(file_check::now);
        put_grant(c, g);
    }

    std::optional<grant> find_active_grant(std::span<std::string const> keys, unix_time t) override
    {
        auto c = borrow();
        auto& q = c.prepare(POPGATE_GRANT_COLUMNS " FROM relay_grants WHERE address = ?1 AND expires_at > ?2");
        for (auto const& k : keys) {
            q.reset();
            q.bind(1, k).bind(2, t);
            if (q.step()) return read_grant(q);
        }
        return std::nullopt;
    }

    void touch_grant(std::string const& address, unix_time t) override
    {
        auto c = borrow(file_check::now);
        put_touch(c, {address, t});
    }

    bool delete_grant(std::string_view address) override
    {
        auto c = borrow(file_check::now);
        auto& q = c.prepare("DELETE FROM relay_grants WHERE address = ?1");
        q.bind(1, address).run();
        return sqlite3_changes(c.db) > 0;
    }

    std::size_t delete_grants_of_user(std::string_view user) override
    {
        auto c = borrow(file_check::now);
        auto& q = c.prepare("DELETE FROM relay_grants WHERE user = ?1");
        q.bind(1, user).run();
        return static_cast<std::size_t>(sqlite3_changes(c.db));
    }

    std::vector<grant> active_grants_of_user(std::string_view user, unix_time t) override
    {
        auto c = borrow();
        auto& q = c.prepare(POPGATE_GRANT_COLUMNS " FROM relay_grants WHERE user = ?1 AND expires_at > ?2"
                                          " ORDER BY granted_at, address");
        q.bind(1, user).bind(2, t);
        std::vector<grant> out;
        while (q.step()) out.push_back(read_grant(q));
        return out;
    }

    std::vector<grant> list_grants(bool include_expired, unix_time t) override
    {
        auto c = borrow();
        // The users sharing an address: its unexpired logins (sql/005).
        auto& q = c.prepare(POPGATE_GRANT_COLUMNS ", (SELECT count(*) FROM relay_grant_logins l"
                                          " WHERE l.address = g.address AND l.expires_at > ?2)"
                                          " FROM relay_grants g WHERE ?1 OR expires_at > ?2"
                                          " ORDER BY expires_at DESC, address");
        q.bind(1, std::int64_t{include_expired}).bind(2, t);
        std::vector<grant> out;
        while (q.step()) {
            out.push_back(read_grant(q));
            out.back().sharing_users = q.i64(12);
        }
        return out;
    }

    std::size_t count_active_grants(unix_time t) override
    {
        auto c = borrow();
        auto& q = c.prepare("SELECT count(*) FROM relay_grants WHERE expires_at > ?1");
        q.bind(1, t);
        return q.step() ? static_cast<std::size_t>(q.i64(0)) : 0;
    }

    std::size_t purge_expired_grants(unix_time t) override
    {
        auto c = borrow(file_check::now);
        auto& q = c.prepare("DELETE FROM relay_grants WHERE expires_at <= ?1");
        q.bind(1, t).run();
        auto const n = static_cast<std::size_t>(sqlite3_changes(c.db));
        // Logins whose grant was refreshed by another user's since.
        auto& l = c.prepare("DELETE FROM relay_grant_logins WHERE expires_at <= ?1");
        l.bind(1, t).run();
        return n;
    }

    std::vector<std::string> ipv6_grant_addresses(unix_time t) override
    {
        auto c = borrow();
        auto& q = c.prepare("SELECT address FROM relay_grants WHERE address GLOB '*:*' AND expires_at > ?1");
        q.bind(1, t);
        std::vector<std::string> out;
        while (q.step()) out.push_back(q.text(0));
        return out;
    }

    std::int64_t add_network(network const& n) override
    {
        auto c = borrow(file_check::now);
        auto& q = c.prepare("INSERT INTO allowed_networks (cidr, note, expires_at) VALUES (?1, ?2, ?3)");
        q.bind(1, n.cidr).bind(2, n.note).bind_opt(3, n.expires_at);
        try {
            q.run();
        } catch (store_error const& e) {
            if (e.code() == store_errc::duplicate)
                throw store_error(store_errc::duplicate, "network " + n.cidr + " is already allowed");
            throw;
        }
        return sqlite3_last_insert_rowid(c.db);
    }

    bool delete_network(std::string_view cidr) override
    {
        auto c = borrow(file_check::now);
        auto& q = c.prepare("DELETE FROM allowed_networks WHERE cidr = ?1");
        q.bind(1, cidr).run();
        return sqlite3_changes(c.db) > 0;
    }

    std::vector<network> list_networks() override
    {
        auto c = borrow();
        auto& q = c.prepare("SELECT id, cidr, note, created_at, expires_at FROM allowed_networks ORDER BY id");
        std::vector<network> out;
        while (q.step()) out.push_back({q.i64(0), q.text(1), q.text(2), q.i64(3), q.opt_i64(4)});
        return out;
    }

    std::int64_t network_generation() override
    {
        auto c = borrow();
        auto& q = c.prepare("SELECT generation FROM network_generation WHERE id = 1");
        return q.step() ? q.i64(0) : -1;
    }

    void audit(std::string_view event, std::string_view address, std::string_view user,
               std::string_view detail) override
    {
        auto c = borrow(file_check::now);
        put_audit(c, event, address, user, detail);
    }

    void write_batch(std::span<write_op const> ops, std::vector<std::string>& errors,
                     std::optional<std::chrono::steady_clock::time_point> deadline) override
    {
        errors.assign(ops.size(), std::string{});
        auto c = borrow(file_check::now);
        busy_deadline wait(c.db, deadline.value_or(std::chrono::steady_clock::now() + opts_.busy_timeout),
                           opts_.busy_timeout);
        detail::transaction tx(c.db);
        for (std::size_t i = 0; i < ops.size(); ++i) {
            try {
                std::visit(
                    [&](auto const& op) {
                        using T = std::decay_t<decltype(op)>;
                        if constexpr (std::is_same_v<T, grant>) put_grant(c, op);
                        else if constexpr (std::is_same_v<T, grant_touch>) put_touch(c, op);
                        else if constexpr (std::is_same_v<T, grant_cap>) put_cap(c, op);
                        else put_audit(c, op.event, op.address, op.user, op.detail);
                    },
                    ops[i]);
            } catch (store_error const& e) {
                // A constraint or trigger refusal undoes that one statement and
                // the transaction goes on (no savepoint per op: they cost an
                // allocation each). Errors that end the transaction (disk
                // full, I/O) fail the whole batch.
                if (sqlite3_get_autocommit(c.db)) throw;
                errors[i] = e.what();
            }
        }
        // Once more just before the commit: a file deleted or replaced while
        // this transaction ran must not get grants nobody can see or revoke.
        // The path against this connection's own handle too: a reopen may
        // have made the path right again for the others.
        check_file(file_check::now);
        opened_file(c.db);
        tx.commit();
    }

    bool reopen_if_moved() override
    {
        file_id current;
        {
            std::lock_guard lock(mutex_);
            current = id_;
        }
        if (auto const id = id_of_path(); id && *id == current) return false;
        auto first = open_first();
        auto const id = opened_file(first.get());
        std::vector<std::unique_ptr<connection>> retired;  // closed after the lock is released
        {
            std::lock_guard lock(mutex_);
            retired.swap(pool_);
            ++generation_;
            id_ = id;
            pool_.push_back(std::make_unique<connection>(connection{std::move(first), {}, generation_}));
        }
        next_check_.store(check_due_after(std::chrono::steady_clock::now()), std::memory_order_relaxed);
        state_.store(file_state::same, std::memory_order_release);
        spdlog::info("database reopened path={}", log::field(path_.string()));
        return true;
    }

    std::vector<audit_entry> list_audit(std::size_t limit) override
    {
        auto c = borrow();
        auto& q = c.prepare("SELECT id, at, event, coalesce(address, ''), coalesce(user, ''), detail"
                     " FROM audit_log ORDER BY id DESC LIMIT ?1");
        q.bind(1, static_cast<std::int64_t>(limit));
        std::vector<audit_entry> out;
        while (q.step()) out.push_back({q.i64(0), q.i64(1), q.text(2), q.text(3), q.text(4), q.text(5)});
        return out;
    }

    std::size_t purge_audit(std::size_t keep_rows, unix_time older_than) override
    {
        auto c = borrow(file_check::now);
        auto& q = c.prepare("DELETE FROM audit_log WHERE at < ?2"
                     " OR id <= (SELECT max(id) FROM audit_log) - ?1");
        q.bind(1, static_cast<std::int64_t>(keep_rows)).bind(2, older_than).run();
        return static_cast<std::size_t>(sqlite3_changes(c.db));
    }

    int schema_version() override
    {
        auto c = borrow();
        return current_schema_version(c.db);
    }

    bool integrity_ok() override
    {
        auto c = borrow();
        auto& q = c.prepare("PRAGMA integrity_check");
        return q.step() && q.text(0) == "ok";
    }

    std::string engine_version() override { return std::string("SQLite ") + sqlite3_libversion(); }

    site_rows read_site(unix_time t) override
    {
        auto c = borrow();
        detail::exec(c.db, "BEGIN");  // one snapshot of the four tables
        struct end_read {
            lease& c;
            ~end_read()
            {
                for (auto& [sql, st] : c.conn->stmts) st->reset();
                sqlite3_exec(c.db, "COMMIT", nullptr, nullptr, nullptr);
            }
        } const end{c};
        site_rows s;
        auto& u = c.prepare("SELECT name, password_hash, shared_secret, disabled, apop_only, created_at, updated_at"
                            " FROM users ORDER BY name");
        while (u.step()) s.users.push_back(read_user(u));
        auto& n = c.prepare("SELECT id, cidr, note, created_at, expires_at FROM allowed_networks ORDER BY id");
        while (n.step()) s.networks.push_back({n.i64(0), n.text(1), n.text(2), n.i64(3), n.opt_i64(4)});
        auto& g = c.prepare(POPGATE_GRANT_COLUMNS " FROM relay_grants WHERE expires_at > ?1 ORDER BY address");
        g.bind(1, t);
        while (g.step()) s.grants.push_back(read_grant(g));
        auto& l = c.prepare("SELECT l.address, l.user, l.last_login, l.expires_at FROM relay_grant_logins l"
                            " JOIN relay_grants g ON g.address = l.address"
                            " WHERE g.expires_at > ?1 AND l.expires_at > ?1 ORDER BY 1, 2");
        l.bind(1, t);
        while (l.step()) s.logins.push_back({l.text(0), l.text(1), l.i64(2), l.i64(3)});
        return s;
    }

    void write_site(site_rows const& s, bool replace) override
    {
        auto c = borrow(file_check::now);
        detail::transaction tx(c.db);
        auto& held = c.prepare("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM allowed_networks),"
                               " (SELECT count(*) FROM relay_grants)");
        held.step();
        auto const users = held.i64(0), networks = held.i64(1), grants = held.i64(2);
        held.reset();
        if (!replace && (users || networks || grants))
            throw store_error(store_errc::constraint,
                              "the destination already holds " + std::to_string(users) + " users, " +
                                  std::to_string(networks) + " networks and " + std::to_string(grants) +
                                  " grants (use --replace)");
        if (replace)
            detail::exec(c.db, "DELETE FROM relay_grant_logins; DELETE FROM relay_grants;"
                               " DELETE FROM allowed_networks; DELETE FROM users");
        copy_rows("users", s.users, site_key::user, [&](user_record const& u) {
            auto& q = c.prepare("INSERT INTO users (name, password_hash, shared_secret, disabled, apop_only,"
                                " created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
            q.bind(1, u.name).bind_opt(2, u.password_hash).bind_opt(3, u.shared_secret);
            q.bind(4, std::int64_t{u.disabled}).bind(5, std::int64_t{u.apop_only}).bind(6, u.created_at);
            q.bind(7, u.updated_at).run();
        });
        copy_rows("allowed_networks", s.networks, site_key::network, [&](network const& n) {
            auto& q = c.prepare("INSERT INTO allowed_networks (cidr, note, created_at, expires_at)"
                                " VALUES (?1, ?2, ?3, ?4)");
            q.bind(1, n.cidr).bind(2, n.note).bind(3, n.created_at).bind_opt(4, n.expires_at).run();
        });
        copy_rows("relay_grants", s.grants, site_key::grant, [&](grant const& g) {
            auto& q = c.prepare("INSERT INTO relay_grants (address, user, method, tls, listener, granted_at,"
                                " expires_at, hits, last_used, quota_hour, quota_messages, quota_recipients)"
                                " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
            q.bind(1, g.address).bind(2, g.user).bind(3, g.method).bind(4, std::int64_t{g.tls});
            q.bind(5, g.listener).bind(6, g.granted_at).bind(7, g.expires_at).bind(8, g.hits);
            q.bind_opt(9, g.last_used).bind(10, g.quota_hour).bind(11, g.quota_messages);
            q.bind(12, g.quota_recipients).run();
        });
        copy_rows("relay_grant_logins", s.logins, site_key::login, [&](grant_login const& l) {
            auto& q = c.prepare("INSERT INTO relay_grant_logins (address, user, last_login, expires_at)"
                                " VALUES (?1, ?2, ?3, ?4)");
            q.bind(1, l.address).bind(2, l.user).bind(3, l.last_login).bind(4, l.expires_at).run();
        });
        tx.commit();
    }

private:
    // A connection borrowed for one call and returned to the pool afterwards,
    // with every statement reset so that no read snapshot stays open (it
    // would hold back WAL checkpoints and show stale rows).
    struct lease {
        sqlite_store* owner;
        std::unique_ptr<connection> conn;
        sqlite3* db;
        lease(sqlite_store* o, std::unique_ptr<connection> c) : owner(o), conn(std::move(c)), db(conn->db.get()) {}
        lease(lease const&) = delete;
        lease& operator=(lease const&) = delete;
        ~lease()
        {
            for (auto& [sql, st] : conn->stmts) st->reset();
            std::unique_ptr<connection> retired;  // on a reopened store's old file: closed, unlocked
            std::lock_guard lock(owner->mutex_);
            if (conn->generation == owner->generation_) owner->pool_.push_back(std::move(conn));
            else retired = std::move(conn);
        }
        // `sql` must be a string literal: its address is the cache key.
        stmt& prepare(char const* sql)
        {
            auto& slot = conn->stmts[sql];
            if (!slot) slot = std::make_unique<stmt>(db, sql);
            else slot->reset();
            return *slot;
        }
    };

    // Reads check the file at most every file_check_interval; writes check
    // now (and write_batch again before its commit).
    lease borrow(file_check mode = file_check::cached)
    {
        check_file(mode);
        std::uint64_t generation = 0;
        file_id id;
        {
            std::lock_guard lock(mutex_);
            if (!pool_.empty()) {
                auto c = std::move(pool_.back());
                pool_.pop_back();
                return lease(this, std::move(c));
            }
            generation = generation_;
            id = id_;
        }
        auto db = open_connection(path_, opts_, false);
        // A file put in the old one's place since the last check is not ours.
        if (opened_file(db.get()) != id) throw moved_error(file_state::replaced);
        return lease(this, std::make_unique<connection>(connection{std::move(db), {}, generation}));
    }

    // Opens (creating and migrating, if the options say so) the file the path
    // names now: at start, and on a reopen.
    conn_ptr open_first()
    {
        std::error_code ec;
        bool const exists = std::filesystem::exists(path_, ec);
        if (ec)  // a directory on the way that this process may not search
            throw store_error(store_errc::unavailable, "cannot open database " + path_.string() + ": " + ec.message());
        if (!exists && opts_.must_exist)
            throw store_error(store_errc::unavailable,
                              "database " + path_.string() +
                                  " does not exist (run `popgate db migrate` or start the daemon once)");
        if (!exists && path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
        auto first = open_connection(path_, opts_, !opts_.must_exist);
        if (opts_.migrate) {
            migrate(first.get());
        } else {
            refuse_if_newer(first.get());
            if (!opts_.accept_older && current_schema_version(first.get()) < latest_schema_version())
                throw store_error(store_errc::unavailable,
                                  "database " + path_.string() + " has schema version " +
                                      std::to_string(current_schema_version(first.get())) +
                                      ", this popgate needs " + std::to_string(latest_schema_version()) +
                                      ": run `popgate db migrate`");
        }
        return first;
    }

    std::optional<file_id> id_of_path() const
    {
        struct stat st {};
        if (::stat(path_.c_str(), &st) != 0) return std::nullopt;
        return file_id{st.st_dev, st.st_ino};
    }

    // The file `db` has open, which must be the one the path names: the path
    // is read first, then SQLite compares it with its open handle, so a file
    // swapped in between is caught too.
    file_id opened_file(sqlite3* db) const
    {
        auto const id = id_of_path();
        if (!id) throw moved_error(file_state::deleted);
        int moved = 0;
        if (sqlite3_file_control(db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK || moved)
            throw moved_error(file_state::replaced);
        return *id;
    }

    store_error moved_error(file_state s) const
    {
        metrics::database_errors.with({"unavailable"}).inc();
        return store_error(store_errc::unavailable,
                           "database " + path_.string() +
                               (s == file_state::deleted ? " was deleted" : " was replaced by another file") +
                               " while open; restore it or reload the daemon (SIGHUP)");
    }

    std::int64_t check_due_after(std::chrono::steady_clock::time_point t) const
    {
        return (t + opts_.file_check_interval).time_since_epoch().count();
    }

    // Does the path still name the file the store opened? A daemon that went
    // on writing into a deleted or replaced file would grant relaying that
    // the CLI, SQL and Postfix cannot see or revoke. Logs once per incident.
    void check_file(file_check mode)
    {
        auto const now = std::chrono::steady_clock::now();
        if (mode == file_check::cached &&
            now.time_since_epoch().count() < next_check_.load(std::memory_order_relaxed)) {
            auto const known = state_.load(std::memory_order_acquire);
            if (known != file_state::same) throw moved_error(known);
            return;
        }
        next_check_.store(check_due_after(now), std::memory_order_relaxed);
        file_id expected;
        {
            std::lock_guard lock(mutex_);
            expected = id_;
        }
        auto const id = id_of_path();
        auto const found = !id ? file_state::deleted : *id == expected ? file_state::same : file_state::replaced;
        auto const before = state_.exchange(found, std::memory_order_acq_rel);
        if (found == file_state::same) {
            if (before != file_state::same)
                spdlog::info("database is back path={}: logins and relay decisions use it again",
                             log::field(path_.string()));
            return;
        }
        if (before == file_state::same)
            spdlog::error("database {} path={} while open: logins answer -ERR [SYS/TEMP] and relay decisions "
                          "451 until it is restored or the daemon is reloaded (SIGHUP)",
                          found == file_state::deleted ? "deleted" : "replaced", log::field(path_.string()));
        throw moved_error(found);
    }

    static void put_grant(lease& c, grant const& g)
    {
        if (g.needs_user) {
            // BEGIN IMMEDIATE: a change of the user either committed before
            // this read, or comes after this commit and its trigger revokes.
            auto& u = c.prepare("SELECT password_hash, shared_secret FROM users WHERE name = ?1 AND NOT disabled");
            u.bind(1, g.user);
            std::optional<credentials> found;
            if (u.step()) found = credentials{u.opt_text(0), u.opt_text(1)};
            u.reset();
            check_grant_user(g, found);
        }
        // One row per address: a new login refreshes it, and never shortens
        // it (see overwrites()). The hit counter belongs to the address and
        // survives the refresh. Most logins refresh an existing row (a client
        // polls from the same address), so that comes first: an UPDATE that
        // leaves `address` alone runs none of the address rules' triggers,
        // which every INSERT must pass.
        std::int64_t const always = overwrites(g);
        auto& up = c.prepare("UPDATE relay_grants SET user = ?2, method = ?3, tls = ?4, listener = ?5,"
                             " granted_at = ?6, expires_at = ?7 WHERE address = ?1 AND (?8 OR expires_at <= ?7)");
        up.bind(1, g.address).bind(2, g.user).bind(3, g.method).bind(4, std::int64_t{g.tls});
        up.bind(5, g.listener).bind(6, g.granted_at).bind(7, g.expires_at).bind(8, always).run();
        if (sqlite3_changes(c.db) == 0) {
            auto& q = c.prepare(
                   "INSERT INTO relay_grants (address, user, method, tls, listener, granted_at, expires_at)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                   " ON CONFLICT (address) DO UPDATE SET user = excluded.user, method = excluded.method,"
                   " tls = excluded.tls, listener = excluded.listener, granted_at = excluded.granted_at,"
                   " expires_at = excluded.expires_at WHERE ?8 OR relay_grants.expires_at <= excluded.expires_at");
            q.bind(1, g.address).bind(2, g.user).bind(3, g.method).bind(4, std::int64_t{g.tls});
            q.bind(5, g.listener).bind(6, g.granted_at).bind(7, g.expires_at).bind(8, always).run();
        }
        put_login(c, g);
        if (!g.audit_detail.empty()) put_audit(c, "grant", g.audit_address, g.user, g.audit_detail);
    }

    // Who logged in at the address (sql/005): `grant list` counts the users.
    static void put_login(lease& c, grant const& g)
    {
        if (g.user.empty()) return;
        auto& q = c.prepare("INSERT INTO relay_grant_logins (address, user, last_login, expires_at)"
                            " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (address, user) DO UPDATE SET"
                            " last_login = excluded.last_login, expires_at = excluded.expires_at");
        q.bind(1, g.address).bind(2, g.user).bind(3, g.granted_at).bind(4, g.expires_at).run();
    }

    static void put_touch(lease& c, grant_touch const& t)
    {
        // Quota counts add up for the same hour, start again for a newer one,
        // and are dropped for an older one (another node has moved on).
        auto& q = c.prepare(
            "UPDATE relay_grants SET hits = hits + ?3, last_used = max(coalesce(last_used, 0), ?2),"
            " quota_messages = CASE WHEN ?4 > quota_hour THEN ?5 WHEN ?4 = quota_hour THEN quota_messages + ?5"
            " ELSE quota_messages END,"
            " quota_recipients = CASE WHEN ?4 > quota_hour THEN ?6 WHEN ?4 = quota_hour THEN quota_recipients + ?6"
            " ELSE quota_recipients END,"
            " quota_hour = max(quota_hour, ?4) WHERE address = ?1");
        q.bind(1, t.address).bind(2, t.at).bind(3, t.count).bind(4, t.quota_hour).bind(5, t.messages);
        q.bind(6, t.recipients).run();
    }

    static void put_cap(lease& c, grant_cap const& k)
    {
        // The newest max - 1 grants of the user besides `keep` stay.
#define POPGATE_CAP_VICTIMS                                                                 \
    "SELECT address FROM relay_grants WHERE user = ?1 AND address <> ?2 AND expires_at > ?3" \
    " ORDER BY granted_at DESC, address DESC LIMIT -1 OFFSET ?4"
        auto const keep_others = static_cast<std::int64_t>(k.max > 0 ? k.max - 1 : 0);
        auto& a = c.prepare("INSERT INTO audit_log (event, address, user, detail)"
                            " SELECT 'revoke', address, ?1, ?5 FROM relay_grants WHERE address IN (" POPGATE_CAP_VICTIMS ")");
        a.bind(1, k.user).bind(2, k.keep).bind(3, k.at).bind(4, keep_others).bind(5, k.detail).run();
        auto& d = c.prepare("DELETE FROM relay_grants WHERE address IN (" POPGATE_CAP_VICTIMS ")");
        d.bind(1, k.user).bind(2, k.keep).bind(3, k.at).bind(4, keep_others).run();
#undef POPGATE_CAP_VICTIMS
    }

    static void put_audit(lease& c, std::string_view event, std::string_view address, std::string_view user,
                          std::string_view detail)
    {
        auto& q = c.prepare("INSERT INTO audit_log (event, address, user, detail) VALUES (?1, ?2, ?3, ?4)");
        q.bind(1, event).bind(2, address).bind(3, user).bind(4, detail).run();
    }

    static user_record read_user(stmt const& q)
    {
        return {q.text(0), q.opt_text(1), q.opt_text(2), q.i64(3) != 0, q.i64(4) != 0, q.i64(5), q.i64(6)};
    }

    static grant read_grant(stmt const& q)
    {
        return {q.text(0), q.text(1), q.text(2), q.i64(3) != 0, q.text(4), q.i64(5), q.i64(6), q.i64(7),
                q.opt_i64(8), q.i64(9), q.i64(10), q.i64(11), 0, {}, {}, false};
    }

    static void insert_user(sqlite3* db, user_record const& u, bool replace)
    {
        stmt q(db, replace ? "INSERT INTO users (name, password_hash, shared_secret, disabled, apop_only)"
                             " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET"
                             " password_hash = excluded.password_hash, shared_secret = excluded.shared_secret,"
                             " disabled = excluded.disabled, apop_only = excluded.apop_only,"
                             " updated_at = unixepoch()"
                           : "INSERT INTO users (name, password_hash, shared_secret, disabled, apop_only)"
                             " VALUES (?1, ?2, ?3, ?4, ?5)");
        q.bind(1, u.name).bind_opt(2, u.password_hash).bind_opt(3, u.shared_secret);
        q.bind(4, std::int64_t{u.disabled}).bind(5, std::int64_t{u.apop_only}).run();
    }

    std::filesystem::path path_;
    sqlite_options opts_;
    std::mutex mutex_;
    std::vector<std::unique_ptr<connection>> pool_;
    file_id id_;                   // of the open file; under mutex_
    std::uint64_t generation_ = 0;  // under mutex_
    std::atomic<std::int64_t> next_check_{0};  // steady_clock ticks
    std::atomic<file_state> state_{file_state::same};
};

}  // namespace

std::unique_ptr<store> open_sqlite_store(std::filesystem::path const& path, sqlite_options const& o)
{
    return std::make_unique<sqlite_store>(path, o);
}

}  // namespace popgate::store
