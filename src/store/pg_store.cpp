#include "popgate/store/pg_store.hpp"

#include "pg_util.hpp"
#include "popgate/io/task_clock.hpp"
#include "popgate/log/log.hpp"
#include "popgate/metrics/catalog.hpp"
#include "popgate/pg_migrations_data.hpp"
#include "popgate/store/copy_rows.hpp"
#include "popgate/store/migrate.hpp"

#include <spdlog/spdlog.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <type_traits>

namespace popgate::store {

std::string redact_uri(std::string_view uri) { return pg::redact(uri); }

namespace {

using pg::p;
using clock = std::chrono::steady_clock;

// Every column of relay_grants that read_grant reads, in its order. Addresses
// are inet: host() gives the bare address (the text cast would add /32).
#define POPGATE_PG_GRANT_COLUMNS                                                                                   \
    "SELECT host(address), \"user\", method, tls, listener, granted_at, expires_at, hits, last_used, quota_hour," \
    " quota_messages, quota_recipients"
// A network as `allow add` writes it: one address bare, a network with /len.
#define POPGATE_PG_CIDR_TEXT \
    "CASE WHEN masklen(cidr) = CASE family(cidr) WHEN 4 THEN 32 ELSE 128 END THEN host(cidr) ELSE text(cidr) END"
#define POPGATE_PG_USER_COLUMNS \
    "SELECT name, password_hash, shared_secret, disabled, apop_only, created_at, updated_at FROM users"

user_record read_user(pg::result const& r, int i)
{
    return {r.text(i, 0), r.opt_text(i, 1), r.opt_text(i, 2), r.boolean(i, 3), r.boolean(i, 4),
            r.i64(i, 5),  r.i64(i, 6)};
}

grant read_grant(pg::result const& r, int i)
{
    return {r.text(i, 0),  r.text(i, 1),  r.text(i, 2),      r.boolean(i, 3), r.text(i, 4),
            r.i64(i, 5),   r.i64(i, 6),   r.i64(i, 7),       r.opt_i64(i, 8), r.i64(i, 9),
            r.i64(i, 10),  r.i64(i, 11),  0, {}, {}, false};
}

// The store's view of the server: up or down, one log line per change, and a
// growing pause between connection attempts while it is down, so that a
// dead server costs a login one failed attempt, not a connect timeout each.
class health {
public:
    explicit health(std::string where) : where_(std::move(where)) {}

    // Throws the last failure while the next attempt is not due.
    void gate()
    {
        std::lock_guard lock(m_);
        if (!up_ && clock::now() < next_try_) {
            metrics::database_errors.with({"unavailable"}).inc();
            throw store_error(store_errc::unavailable, last_error_);
        }
    }

    void failed(std::string const& why)
    {
        std::lock_guard lock(m_);
        backoff_ = std::clamp(backoff_ * 2, std::chrono::milliseconds(200), std::chrono::milliseconds(5000));
        next_try_ = clock::now() + backoff_;
        last_error_ = why;
        if (!up_) return;
        up_ = false;
        announced_ = true;
        spdlog::error("database unreachable database={} reason={}: logins answer -ERR [SYS/TEMP] and relay "
                      "decisions 451 until it is back; reconnecting",
                      log::field(where_), log::field(why, 400));
    }

    void ok()
    {
        std::lock_guard lock(m_);
        backoff_ = std::chrono::milliseconds(0);
        if (up_) return;
        up_ = true;
        if (!announced_) return;
        announced_ = false;
        spdlog::info("database reachable again database={}", log::field(where_));
    }

    std::chrono::milliseconds backoff() const
    {
        std::lock_guard lock(m_);
        return std::max(backoff_, std::chrono::milliseconds(200));
    }

private:
    mutable std::mutex m_;
    std::string where_;
    // Down until the first connection: a failure before it is the opening
    // call's error (the daemon does not start), not an outage to announce.
    bool up_ = false;
    bool announced_ = false;  // "unreachable" was logged, "reachable again" is due
    std::string last_error_;
    clock::time_point next_try_{};
    std::chrono::milliseconds backoff_{0};
};

class pg_store final : public store {
public:
    pg_store(std::string uri, pg_options o) : uri_(std::move(uri)), opts_(o), health_(pg::redact(uri_))
    {
        {
            auto c = borrow();
            if (opts_.migrate) migrate(*c.conn);
            else check_schema(*c.conn);
        }
        if (opts_.watch_networks) {
            wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            watcher_ = std::jthread([this](std::stop_token st) { watch(st); });
        }
    }

    ~pg_store() override
    {
        if (watcher_.joinable()) {
            watcher_.request_stop();
            std::uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(wake_, &one, sizeof one);
            watcher_.join();
        }
        if (wake_ >= 0) ::close(wake_);
    }

    bool crosses_network() const noexcept override { return true; }

    std::optional<user_record> find_user(std::string_view name) override
    {
        // No user has such a name (users.name is printable ASCII), and the
        // query would refuse it as a store failure: a client's name is not one.
        if (name.find('\0') != std::string_view::npos) return std::nullopt;
        return with([&](pg::connection& c) -> std::optional<user_record> {
            auto r = c.run(POPGATE_PG_USER_COLUMNS " WHERE name = $1", {p(name)});
            if (r.rows() == 0) return std::nullopt;
            return read_user(r, 0);
        });
    }

    void add_user(user_record const& u) override
    {
        with([&](pg::connection& c) {
            try {
                insert_user(c, u, false);
            } catch (store_error const& e) {
                if (e.code() == store_errc::duplicate)
                    throw store_error(store_errc::duplicate, "user '" + u.name + "' already exists");
                throw;
            }
        }, effect::writes);
    }

    void update_user(user_record const& u) override
    {
        with([&](pg::connection& c) {
            auto r = c.run("UPDATE users SET password_hash = $2, shared_secret = $3, disabled = $4, apop_only = $5,"
                           " updated_at = unixepoch() WHERE name = $1",
                           {p(u.name), p(u.password_hash), p(u.shared_secret), p(u.disabled), p(u.apop_only)});
            if (r.affected() == 0) throw store_error(store_errc::not_found, "no such user '" + u.name + "'");
        }, effect::writes);
    }

    bool delete_user(std::string_view name) override
    {
        return with([&](pg::connection& c) {
            return c.run("DELETE FROM users WHERE name = $1", {p(name)}).affected() > 0;
        }, effect::writes);
    }

    std::vector<user_record> list_users() override
    {
        return with([&](pg::connection& c) {
            auto r = c.run(POPGATE_PG_USER_COLUMNS " ORDER BY name");
            std::vector<user_record> out;
            for (int i = 0; i < r.rows(); ++i) out.push_back(read_user(r, i));
            return out;
        });
    }

    void import_users(std::span<user_record const> users, bool replace) override
    {
        in_transaction([&](pg::connection& c) {
            for (auto const& u : users) {
                try {
                    insert_user(c, u, replace);
                } catch (store_error const& e) {
                    if (e.code() == store_errc::duplicate)
                        throw store_error(store_errc::duplicate,
                                          "user '" + u.name + "' already exists (use --replace to overwrite)");
                    throw store_error(e.code(), "user '" + u.name + "': " + e.what());
                }
            }
        });
    }

    void upsert_grant(grant const& g) override
    {
        in_transaction([&](pg::connection& c) { put_grant(c, g); });
    }

    std::optional<grant> find_active_grant(std::span<std::string const> keys, unix_time t) override
    {
        // One round trip for both keys; the first key that has a grant wins.
        std::string arr = "{";
        for (std::size_t i = 0; i < keys.size(); ++i) arr += (i ? "," : "") + keys[i];
        arr += "}";
        // The same round trip reads the network generation: a network row
        // changed just before this decision then counts at once, even when
        // the watcher has not heard the notification yet (the decision asks
        // network_generation() next).
        return with([&](pg::connection& c) -> std::optional<grant> {
            auto const ticket = generation_ticket();
            auto r = c.run("SELECT g.*, n.generation FROM network_generation n LEFT JOIN LATERAL ("
                           POPGATE_PG_GRANT_COLUMNS " FROM relay_grants WHERE address = ANY ($1::inet[])"
                           " AND expires_at > $2 ORDER BY array_position($1::inet[], address) LIMIT 1) g ON true"
                           " WHERE n.id = 1",
                           {p(arr), p(t)});
            if (r.rows() == 0) return std::nullopt;
            offer_generation(ticket, r.i64(0, 12));
            if (r.null(0, 0)) return std::nullopt;
            return read_grant(r, 0);
        });
    }

    void touch_grant(std::string const& address, unix_time t) override
    {
        with([&](pg::connection& c) { put_touch(c, {address, t}); }, effect::writes);
    }

    bool delete_grant(std::string_view address) override
    {
        return with([&](pg::connection& c) {
            return c.run("DELETE FROM relay_grants WHERE address = $1::inet", {p(address)}).affected() > 0;
        }, effect::writes);
    }

    std::size_t delete_grants_of_user(std::string_view user) override
    {
        return with([&](pg::connection& c) {
            return static_cast<std::size_t>(
                c.run("DELETE FROM relay_grants WHERE \"user\" = $1", {p(user)}).affected());
        }, effect::writes);
    }

    std::vector<grant> active_grants_of_user(std::string_view user, unix_time t) override
    {
        return with([&](pg::connection& c) {
            auto r = c.run(POPGATE_PG_GRANT_COLUMNS " FROM relay_grants WHERE \"user\" = $1 AND expires_at > $2"
                                                    " ORDER BY granted_at, address",
                           {p(user), p(t)});
            return grants_of(r);
        });
    }

    std::vector<grant> list_grants(bool include_expired, unix_time t) override
    {
        return with([&](pg::connection& c) {
            auto r = c.run(POPGATE_PG_GRANT_COLUMNS ", (SELECT count(*) FROM relay_grant_logins l"
                                                    " WHERE l.address = g.address AND l.expires_at > $2)"
                                                    " FROM relay_grants g WHERE $1 OR expires_at > $2"
                                                    " ORDER BY expires_at DESC, address",
                           {p(include_expired), p(t)});
            auto out = grants_of(r);
            for (int i = 0; i < r.rows(); ++i) out[static_cast<std::size_t>(i)].sharing_users = r.i64(i, 12);
            return out;
        });
    }

    std::size_t count_active_grants(unix_time t) override
    {
        return with([&](pg::connection& c) {
            auto r = c.run("SELECT count(*) FROM relay_grants WHERE expires_at > $1", {p(t)});
            return static_cast<std::size_t>(r.i64(0, 0));
        });
    }

    std::size_t purge_expired_grants(unix_time t) override
    {
        return in_transaction([&](pg::connection& c) {
            auto const n = c.run("DELETE FROM relay_grants WHERE expires_at <= $1", {p(t)}).affected();
            c.run("DELETE FROM relay_grant_logins WHERE expires_at <= $1", {p(t)});
            return static_cast<std::size_t>(n);
        });
    }

    std::vector<std::string> ipv6_grant_addresses(unix_time t) override
    {
        return with([&](pg::connection& c) {
            auto r = c.run("SELECT host(address) FROM relay_grants WHERE family(address) = 6 AND expires_at > $1",
                           {p(t)});
            std::vector<std::string> out;
            for (int i = 0; i < r.rows(); ++i) out.push_back(r.text(i, 0));
            return out;
        });
    }

    std::int64_t add_network(network const& n) override
    {
        return with([&](pg::connection& c) {
            try {
                auto r = c.run("INSERT INTO allowed_networks (cidr, note, expires_at) VALUES ($1, $2, $3) RETURNING id",
                               {p(n.cidr), p(n.note), p(n.expires_at)});
                return r.i64(0, 0);
            } catch (store_error const& e) {
                if (e.code() == store_errc::duplicate)
                    throw store_error(store_errc::duplicate, "network " + n.cidr + " is already allowed");
                throw;
            }
        }, effect::writes);
    }

    bool delete_network(std::string_view cidr) override
    {
        return with([&](pg::connection& c) {
            return c.run("DELETE FROM allowed_networks WHERE cidr = $1::cidr", {p(cidr)}).affected() > 0;
        }, effect::writes);
    }

    std::vector<network> list_networks() override
    {
        return with([&](pg::connection& c) {
            auto r = c.run("SELECT id, " POPGATE_PG_CIDR_TEXT ", note, created_at, expires_at FROM allowed_networks"
                           " ORDER BY id");
            std::vector<network> out;
            for (int i = 0; i < r.rows(); ++i)
                out.push_back({r.i64(i, 0), r.text(i, 1), r.text(i, 2), r.i64(i, 3), r.opt_i64(i, 4)});
            return out;
        });
    }

    std::int64_t network_generation() override
    {
        // The daemon: what the watcher last heard (a notification, or its
        // periodic read); a grant lookup has already asked the server.
        if (opts_.watch_networks) {
            auto const g = generation_.load(std::memory_order_acquire);
            if (g >= 0) return g;
        }
        return with([&](pg::connection& c) { return read_generation(c); });
    }

    void audit(std::string_view event, std::string_view address, std::string_view user,
               std::string_view detail) override
    {
        with([&](pg::connection& c) { put_audit(c, event, address, user, detail); }, effect::writes);
    }

    void write_batch(std::span<write_op const> ops, std::vector<std::string>& errors,
                     std::optional<clock::time_point> deadline) override
    {
        errors.assign(ops.size(), std::string{});
        // The earliest deadline of the batch bounds its statements, where it
        // is nearer than statement_timeout: a login that queued behind a
        // batch held up by a lock waits its own busy timeout from its start,
        // not that batch's and then its own (write_queue retries the units
        // still within theirs).
        std::string limit;
        if (deadline) {
            auto const left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - clock::now());
            if (left.count() <= 0) {
                metrics::database_errors.with({"busy"}).inc();
                throw store_error(store_errc::busy, "the busy timeout passed before the write could begin");
            }
            if (left < opts_.statement_timeout - std::chrono::milliseconds(100))
                limit = "SET LOCAL statement_timeout = " + std::to_string(left.count());
        }
        // PostgreSQL aborts the whole transaction on any error. The batch is
        // first tried as it is, one round trip per op; only when an op is
        // refused is it run again with a savepoint around each op, so that
        // the refused ones are undone alone (three round trips per op, for
        // the rare batch that needs it).
        try {
            in_transaction([&](pg::connection& c) {
                if (!limit.empty()) c.run(limit.c_str());
                lock_capped_users(c, ops);
                for (auto const& op : ops) apply(c, op);
            });
            return;
        } catch (store_error const& e) {
            if (e.code() != store_errc::constraint && e.code() != store_errc::duplicate) throw;
        }
        in_transaction([&](pg::connection& c) {
            if (!limit.empty()) c.run(limit.c_str());
            lock_capped_users(c, ops);
            for (std::size_t i = 0; i < ops.size(); ++i) {
                c.run("SAVEPOINT op");
                try {
                    apply(c, ops[i]);
                    c.run("RELEASE SAVEPOINT op");
                } catch (store_error const& e) {
                    if (e.code() != store_errc::constraint && e.code() != store_errc::duplicate) throw;
                    c.run("ROLLBACK TO SAVEPOINT op");
                    errors[i] = e.what();
                }
            }
        });
    }

    // relay.max_grants_per_user across nodes: a grant_cap counts the user's
    // grants as its transaction sees them, and two nodes' batches do not see
    // each other's uncommitted grant, so both would stay. A transaction-long
    // advisory lock per capped user (its own key space: two int4 keys)
    // makes the second batch wait for the first's commit and then count its
    // grant. Taken at the start, in name order, so that batches cannot
    // deadlock on them.
    static void lock_capped_users(pg::connection& c, std::span<write_op const> ops)
    {
        std::set<std::string_view> users;
        for (auto const& op : ops)
            if (auto const* k = std::get_if<grant_cap>(&op)) users.insert(k->user);
        for (auto const u : users) c.run("SELECT pg_advisory_xact_lock(7366, hashtext($1))", {p(u)});
    }

    static void apply(pg::connection& c, write_op const& op)
    {
        std::visit(
            [&](auto const& o) {
                using T = std::decay_t<decltype(o)>;
                if constexpr (std::is_same_v<T, grant>) put_grant(c, o);
                else if constexpr (std::is_same_v<T, grant_touch>) put_touch(c, o);
                else if constexpr (std::is_same_v<T, grant_cap>) put_cap(c, o);
                else put_audit(c, o.event, o.address, o.user, o.detail);
            },
            op);
    }

    bool reopen_if_moved() override { return false; }  // a server, not a file

    std::vector<audit_entry> list_audit(std::size_t limit) override
    {
        return with([&](pg::connection& c) {
            auto r = c.run("SELECT id, at, event, coalesce(address::text, ''), coalesce(\"user\", ''), detail"
                           " FROM audit_log ORDER BY id DESC LIMIT $1",
                           {p(static_cast<std::int64_t>(limit))});
            std::vector<audit_entry> out;
            for (int i = 0; i < r.rows(); ++i)
                out.push_back({r.i64(i, 0), r.i64(i, 1), r.text(i, 2), r.text(i, 3), r.text(i, 4), r.text(i, 5)});
            return out;
        });
    }

    std::size_t purge_audit(std::size_t keep_rows, unix_time older_than) override
    {
        return with([&](pg::connection& c) {
            return static_cast<std::size_t>(
                c.run("DELETE FROM audit_log WHERE at < $2 OR id <= (SELECT max(id) FROM audit_log) - $1",
                      {p(static_cast<std::int64_t>(keep_rows)), p(older_than)})
                    .affected());
        }, effect::writes);
    }

    int schema_version() override
    {
        return with([&](pg::connection& c) { return current_version(c); });
    }

    bool integrity_ok() override
    {
        // PostgreSQL keeps its own pages checked (data checksums, if the
        // cluster has them); this proves a round trip. Whether the schema is
        // this popgate's is schema_version()'s to say.
        return with([&](pg::connection& c) { return c.run("SELECT 1").i64(0, 0) == 1; });
    }

    std::string engine_version() override
    {
        return with([&](pg::connection& c) {
            auto r = c.run("SELECT current_setting('server_version')");
            return "PostgreSQL " + r.text(0, 0);
        });
    }

    site_rows read_site(unix_time t) override
    {
        // One snapshot of the four tables: READ COMMITTED would take one per
        // statement, and a live database's rows could come from moments apart.
        return in_transaction([&](pg::connection& c) {
            c.run("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
            site_rows s;
            auto u = c.run(POPGATE_PG_USER_COLUMNS " ORDER BY name");
            for (int i = 0; i < u.rows(); ++i) s.users.push_back(read_user(u, i));
            auto n = c.run("SELECT id, " POPGATE_PG_CIDR_TEXT ", note, created_at, expires_at FROM allowed_networks"
                           " ORDER BY id");
            for (int i = 0; i < n.rows(); ++i)
                s.networks.push_back({n.i64(i, 0), n.text(i, 1), n.text(i, 2), n.i64(i, 3), n.opt_i64(i, 4)});
            auto g = c.run(POPGATE_PG_GRANT_COLUMNS " FROM relay_grants WHERE expires_at > $1 ORDER BY address",
                           {p(t)});
            s.grants = grants_of(g);
            auto l = c.run("SELECT host(l.address), l.\"user\", l.last_login, l.expires_at FROM relay_grant_logins l"
                           " JOIN relay_grants g ON g.address = l.address"
                           " WHERE g.expires_at > $1 AND l.expires_at > $1 ORDER BY 1, 2",
                           {p(t)});
            for (int i = 0; i < l.rows(); ++i)
                s.logins.push_back({l.text(i, 0), l.text(i, 1), l.i64(i, 2), l.i64(i, 3)});
            return s;
        });
    }

    void write_site(site_rows const& s, bool replace) override
    {
        in_transaction([&](pg::connection& c) {
            auto const held = c.run("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM allowed_networks),"
                                    " (SELECT count(*) FROM relay_grants)");
            if (!replace && (held.i64(0, 0) || held.i64(0, 1) || held.i64(0, 2)))
                throw store_error(store_errc::constraint, "the destination already holds " + held.text(0, 0) +
                                                              " users, " + held.text(0, 1) + " networks and " +
                                                              held.text(0, 2) + " grants (use --replace)");
            if (replace)
                c.exec("DELETE FROM relay_grant_logins; DELETE FROM relay_grants; DELETE FROM allowed_networks;"
                       " DELETE FROM users");
            copy_rows("users", s.users, site_key::user, [&](user_record const& u) {
                c.run("INSERT INTO users (name, password_hash, shared_secret, disabled, apop_only, created_at,"
                      " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                      {p(u.name), p(u.password_hash), p(u.shared_secret), p(u.disabled), p(u.apop_only),
                       p(u.created_at), p(u.updated_at)});
            });
            copy_rows("allowed_networks", s.networks, site_key::network, [&](network const& n) {
                c.run("INSERT INTO allowed_networks (cidr, note, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                      {p(n.cidr), p(n.note), p(n.created_at), p(n.expires_at)});
            });
            copy_rows("relay_grants", s.grants, site_key::grant, [&](grant const& g) {
                c.run("INSERT INTO relay_grants (address, \"user\", method, tls, listener, granted_at, expires_at,"
                      " hits, last_used, quota_hour, quota_messages, quota_recipients)"
                      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                      {p(g.address), p(g.user), p(g.method), p(g.tls), p(g.listener), p(g.granted_at),
                       p(g.expires_at), p(g.hits), p(g.last_used), p(g.quota_hour), p(g.quota_messages),
                       p(g.quota_recipients)});
            });
            copy_rows("relay_grant_logins", s.logins, site_key::login, [&](grant_login const& l) {
                c.run("INSERT INTO relay_grant_logins (address, \"user\", last_login, expires_at)"
                      " VALUES ($1, $2, $3, $4)",
                      {p(l.address), p(l.user), p(l.last_login), p(l.expires_at)});
            });
        });
    }

private:
    // A connection borrowed for one call and returned afterwards, unless it
    // broke or was left inside a transaction (then it is closed).
    struct lease {
        pg_store* owner;
        std::unique_ptr<pg::connection> conn;
        bool reused;
        lease(pg_store* o, std::unique_ptr<pg::connection> c, bool r) : owner(o), conn(std::move(c)), reused(r) {}
        lease(lease&&) = default;
        lease(lease const&) = delete;
        lease& operator=(lease const&) = delete;
        ~lease()
        {
            if (!conn) return;
            bool const keep = !conn->broken() && !conn->in_transaction();
            std::unique_lock lock(owner->mutex_);
            if (keep) owner->idle_.push_back(std::move(conn));
            else --owner->open_;
            lock.unlock();
            owner->freed_.notify_one();
            conn.reset();  // a broken one is closed outside the lock
        }
    };

    lease borrow()
    {
        int fresh_lost = 0;
        return borrow(fresh_lost);
    }
    // fresh_lost: the new connections the server closed during this call
    // (counted here and by with()), shared so that max_lost_in_a_row bounds
    // the call, not each of its steps.
    lease borrow(int& fresh_lost)
    {
        // A call that waited its whole budget for a pool thread while
        // statements were timing out (behind a held lock every thread waits
        // out statement_timeout) answers "busy" at once, as it would have
        // after its own statement timed out. A wait behind other work of the
        // pool (a burst of logins' crypt(3)) is no sign of that: the call
        // then goes on with the budget it always had.
        auto const budget = std::chrono::duration_cast<clock::duration>(opts_.statement_timeout);
        bool const held_up = held_up_within(budget);
        if (held_up && io::task_waited >= budget) {
            metrics::database_errors.with({"busy"}).inc();
            throw store_error(store_errc::busy,
                              "waited " +
                                  std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(io::task_waited)
                                                     .count()) +
                                  " ms for a database thread: every one is held up (a lock, a slow server)");
        }
        std::unique_lock lock(mutex_);
        auto const until = clock::now() + (held_up ? budget - io::task_waited : budget);
        for (;;) {
            while (!idle_.empty()) {
                auto c = std::move(idle_.back());
                idle_.pop_back();
                if (!c->went_stale()) return lease(this, std::move(c), true);
                --open_;  // closed on leaving this scope
            }
            if (open_ < opts_.max_connections) break;
            if (freed_.wait_until(lock, until) == std::cv_status::timeout && idle_.empty() &&
                open_ >= opts_.max_connections) {
                note_held_up();
                metrics::database_errors.with({"busy"}).inc();
                throw store_error(store_errc::busy, "all PostgreSQL connections are busy");
            }
        }
        ++open_;
        lock.unlock();
        // The slot taken above, given back when no connection comes of it.
        auto give_back = [this] {
            {
                std::lock_guard relock(mutex_);
                --open_;
            }
            freed_.notify_one();
        };
        try {
            health_.gate();  // not an attempt: the pause since the last failure still runs
        } catch (store_error const&) {
            give_back();
            throw;
        }
        // A connection the server closed during its setup was accepted: the
        // server is up (it closes connections: an administrator, a pooler),
        // and another is tried at once. Only a connect that fails, or
        // max_lost_in_a_row such losses in one call, is an outage.
        for (;;) {
            try {
                auto c = std::make_unique<pg::connection>(uri_, opts_.statement_timeout);
                follow_clock(c->clock_at_connect());
                health_.ok();
                return lease(this, std::move(c), false);
            } catch (pg::connection_lost const& e) {
                if (++fresh_lost < max_lost_in_a_row) continue;
                give_back();
                health_.failed(e.what());
                throw;
            } catch (store_error const& e) {
                give_back();
                health_.failed(e.what());
                throw;
            }
        }
    }
    // New connections the server may close just after it accepted them
    // before one call gives up and calls the server unreachable.
    static constexpr int max_lost_in_a_row = 3;

    // When a statement last timed out or found the server busy, or a call
    // found every connection taken for its whole budget.
    void note_held_up() noexcept
    {
        held_up_at_.store(clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    }
    // Measured at each new connection and every network_check_interval
    // (store::follow_server_clock): the server's clock at the middle of the
    // round trip. This host's wall clock is read only for the log.
    void follow_clock(pg::connection& c)
    {
        auto const before = std::chrono::steady_clock::now();
        auto const server_ms = c.run(pg::server_clock_sql).i64(0, 0);
        follow_clock({server_ms, before + (std::chrono::steady_clock::now() - before) / 2});
    }
    void follow_clock(pg::connection::clock_reading const& r)
    {
        using namespace std::chrono;
        popgate::store::follow_server_clock(r.server_ms, r.at);
        auto const wall_at = system_clock::now() - (steady_clock::now() - r.at);
        auto const diff = r.server_ms - duration_cast<milliseconds>(wall_at.time_since_epoch()).count();
        std::int64_t const offset = (diff + (diff < 0 ? -500 : 500)) / 1000;
        // Logged when it moves by more than the rounding's second.
        auto const prev = logged_offset_.exchange(offset);
        auto const apart = [](std::int64_t o) { return o <= -2 || o >= 2; };
        if (apart(offset) && offset != prev)
            spdlog::warn("clock: this host's is {} s {} the PostgreSQL server's; grants, quotas and purges follow "
                         "the server's clock (keep the clocks in step: NTP) database={}",
                         offset < 0 ? -offset : offset, offset > 0 ? "behind" : "ahead of",
                         log::field(pg::redact(uri_)));
        else if (!apart(offset) && apart(prev))
            spdlog::info("clock: this host's is in step with the PostgreSQL server's again database={}",
                         log::field(pg::redact(uri_)));
    }

    // After a statement failed: the three places that catch it ask here.
    void note_if_held_up(store_error const& e, pg::connection const& conn) noexcept
    {
        if (e.code() == store_errc::busy || conn.timed_out()) note_held_up();
    }
    bool held_up_within(clock::duration d) const noexcept
    {
        auto const at = held_up_at_.load(std::memory_order_relaxed);
        return at != 0 && clock::now() - clock::time_point(clock::duration(at)) <= d;
    }

    // What a call on a connection may do: a statement that writes may have
    // run (and committed) when the server closed the connection under it.
    // A writes call runs one statement: maybe_ran() tells of the last one.
    enum class effect { reads, writes };

    // Runs f on a borrowed connection. A connection the server closed (it
    // restarted, failed over, or an administrator or a pooler closes
    // connections) is mostly found idle, before use (went_stale); one found
    // in use is tried again on another, until the pool is spent, a new
    // connect fails (the server is down: health_ says so, in borrow()), or
    // max_lost_in_a_row new connections were lost in the call. The server
    // may have closed every idle connection at once (a restart,
    // idle_session_timeout), so one retry is not enough. A read is always
    // tried again; a write only when its statement was never sent: one sent
    // may have run, so that call fails alone and the store stays up. Not
    // after a call that timed out: it was sent and may have run, and a
    // server that does not answer one connection will not answer the next
    // either.
    template <class F>
    auto with(F&& f, effect e = effect::reads) -> std::invoke_result_t<F&, pg::connection&>
    {
        return counting_losses([&] {
            for (int attempt = 0, fresh_lost = 0;; ++attempt) {
                auto c = borrow(fresh_lost);
                try {
                    return f(*c.conn);
                } catch (store_error const& err) {
                    note_if_held_up(err, *c.conn);
                    if (!c.conn->broken()) throw;
                    if (!after_loss(c, attempt, fresh_lost, e, err)) throw;
                }
            }
        });
    }

    // After a call found its connection broken: true to try it again;
    // false when it fails, health_ told when that means an outage.
    bool after_loss(lease const& c, int attempt, int& fresh_lost, effect e, store_error const& err)
    {
        if (!c.reused) ++fresh_lost;
        bool const spent = attempt > static_cast<int>(opts_.max_connections) || fresh_lost >= max_lost_in_a_row;
        if (c.conn->timed_out() || spent) {
            health_.failed(err.what());
            return false;
        }
        // A write is sent again only when it never left: the server may
        // have run and committed it before it closed the connection (a
        // backend cut while it waited for a synchronous standby commits
        // locally first), on a reused connection as on a new one.
        return e == effect::reads || !c.conn->maybe_ran();
    }

    // A loss the call could not get past is a failed operation ("unavailable");
    // the losses it got past are only "lost".
    template <class F>
    static auto counting_losses(F&& f) -> std::invoke_result_t<F&>
    {
        try {
            return f();
        } catch (pg::connection_lost const&) {
            metrics::database_errors.with({"unavailable"}).inc();
            throw;
        }
    }

    // BEGIN ... COMMIT around f; rolled back if f throws. Retried like
    // with()'s reads when BEGIN itself found the connection dead; never
    // after (the transaction may have committed as the connection went).
    template <class F>
    auto in_transaction(F&& f) -> std::invoke_result_t<F&, pg::connection&>
    {
        return counting_losses([&]() -> std::invoke_result_t<F&, pg::connection&> {
            for (int attempt = 0, fresh_lost = 0;; ++attempt) {
                auto c = borrow(fresh_lost);
                try {
                    c.conn->run("BEGIN");
                } catch (store_error const& err) {
                    note_if_held_up(err, *c.conn);
                    if (c.conn->broken() && after_loss(c, attempt, fresh_lost, effect::reads, err)) continue;
                    throw;
                }
                try {
                    if constexpr (std::is_void_v<std::invoke_result_t<F&, pg::connection&>>) {
                        f(*c.conn);
                        c.conn->run("COMMIT");
                        return;
                    } else {
                        auto out = f(*c.conn);
                        c.conn->run("COMMIT");
                        return out;
                    }
                } catch (store_error const& err) {
                    note_if_held_up(err, *c.conn);
                    // A server that closed the connection mid-transaction was
                    // up: the next connect tells whether it still is. One
                    // that did not answer in time is not.
                    if (c.conn->timed_out()) health_.failed(err.what());
                    else if (!c.conn->broken() && c.conn->in_transaction()) {
                        try {
                            c.conn->run("ROLLBACK");
                        } catch (store_error const&) {
                        }
                    }
                    throw;
                }
            }
        });
    }

    static std::vector<grant> grants_of(pg::result const& r)
    {
        std::vector<grant> out;
        out.reserve(static_cast<std::size_t>(r.rows()));
        for (int i = 0; i < r.rows(); ++i) out.push_back(read_grant(r, i));
        return out;
    }

    static int current_version(pg::connection& c)
    {
        // Two statements: one that names a missing table fails when it is
        // parsed, whatever a CASE around it would choose.
        if (c.run("SELECT to_regclass('schema_migrations') IS NULL").boolean(0, 0)) return 0;
        auto r = c.run("SELECT coalesce(max(version), 0) FROM schema_migrations");
        return static_cast<int>(r.i64(0, 0));
    }

    static int latest() noexcept
    {
        return generated_pg::migrations.empty() ? 0 : generated_pg::migrations.back().version;
    }

    static void refuse_if_newer(int current)
    {
        if (current > latest())
            throw store_error(store_errc::schema_too_new,
                              "database schema version " + std::to_string(current) +
                                  " is newer than this popgate understands (" + std::to_string(latest()) +
                                  "); upgrade popgate or use the matching release");
    }

    void check_schema(pg::connection& c)
    {
        int const current = current_version(c);
        refuse_if_newer(current);
        if (current < latest() && !opts_.accept_older) {
            // A role that may not apply migrations (roles.sql's rows-only
            // role) is told who must, as the daemon's start tells it.
            auto const owns = c.run("SELECT pg_has_role(relowner, 'USAGE') FROM pg_class"
                                    " WHERE oid = to_regclass('schema_migrations')");
            bool const may = owns.rows() == 0 || owns.text(0, 0) == "t";
            throw store_error(store_errc::unavailable,
                              "database " + pg::redact(uri_) + " has schema version " + std::to_string(current) +
                                  ", this popgate needs " + std::to_string(latest()) +
                                  (may ? ": run `popgate db migrate`"
                                       : ": run `popgate db migrate` as the role that owns the schema; this one may "
                                         "only read and write rows (sql/postgresql/roles.sql)"));
        }
    }

    // All pending migrations in one transaction, under an advisory lock:
    // nodes starting at once wait for the first one and then find nothing
    // left to do. A current schema (every start but the first after an
    // upgrade) is only read: a role that may read and write rows and no
    // more (sql/postgresql/roles.sql, another role owning the schema) may
    // not even run CREATE TABLE IF NOT EXISTS.
    void migrate(pg::connection& c)
    {
        int const found = current_version(c);
        refuse_if_newer(found);
        if (found == latest()) return;
        c.exec("BEGIN");
        try {
            c.exec("SELECT pg_advisory_xact_lock(7366723637)");
            c.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                   " applied_at bigint NOT NULL DEFAULT extract(epoch FROM now())::bigint)");
            int const current = current_version(c);
            refuse_if_newer(current);
            for (auto const& m : generated_pg::migrations) {
                if (m.version <= current) continue;
                c.exec(std::string(m.sql));
                c.run("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                      {p(std::int64_t{m.version}), p(m.name)});
                spdlog::info("database migrated version={} name={}", m.version, m.name);
            }
            c.exec("COMMIT");
        } catch (store_error const& e) {
            if (!c.broken()) PQclear(PQexec(c.raw(), "ROLLBACK"));
            // A role that may read and write rows and no more (roles.sql),
            // on a schema another role owns and has not migrated yet.
            if (found > 0 && std::string_view(e.what()).find("(42501)") != std::string_view::npos)
                throw store_error(store_errc::unavailable,
                                  "database " + pg::redact(uri_) + " has schema version " + std::to_string(found) +
                                      ", this popgate needs " + std::to_string(latest()) +
                                      ", and this role may not apply migrations (" + e.what() +
                                      "): run `popgate db migrate` as the role that owns the schema "
                                      "(sql/postgresql/roles.sql)");
            throw;
        } catch (...) {
            if (!c.broken()) PQclear(PQexec(c.raw(), "ROLLBACK"));
            throw;
        }
    }

    static std::int64_t read_generation(pg::connection& c)
    {
        auto r = c.run("SELECT generation FROM network_generation WHERE id = 1");
        return r.rows() ? r.i64(0, 0) : -1;
    }

    // The watcher and every grant lookup read the generation on their own
    // connections, and their answers can arrive in any order: a read begun
    // before a change may land after one begun since, and storing it would
    // bring back the old generation (a network deleted by hand relaying on,
    // found by the unit test under CI load). Each read takes a ticket before
    // it is sent, and only a read begun later than the one stored replaces
    // it. Tickets, not the values, decide: a database restored with a lower
    // generation must still be taken.
    std::uint64_t generation_ticket() { return tickets_.fetch_add(1, std::memory_order_acq_rel) + 1; }
    void offer_generation(std::uint64_t ticket, std::int64_t g)
    {
        std::lock_guard lock(generation_mutex_);
        if (ticket < generation_ticket_) return;
        generation_ticket_ = ticket;
        generation_.store(g, std::memory_order_release);
    }
    void refresh_generation(pg::connection& c)
    {
        auto const ticket = generation_ticket();
        offer_generation(ticket, read_generation(c));
    }

    // The network watcher's thread: LISTEN popgate_networks on a connection
    // of its own, take each notification's generation, read the table again
    // every network_check_interval and after each reconnect (a notification
    // sent while it was away is lost), reconnect with the health backoff.
    void watch(std::stop_token st)
    {
        // A connection lost once the server accepted it (before or after it
        // listened) is reconnected at once, and is no outage by itself: the
        // server may have closed it alone (an administrator,
        // idle_session_timeout). A second loss within a second of such a
        // reconnect pauses the watcher alone for a second: the connect
        // worked, so the server is up, and health_'s backoff would refuse
        // every decision and login meanwhile. Only a failed connect is
        // health_'s (its log line and backoff).
        auto last_quick = clock::time_point{};
        int lost_before_listening = 0;  // in a row: a pooler whose server is down accepts, then closes
        while (!st.stop_requested()) {
            bool listening = false;
            try {
                pg::connection c(uri_, opts_.statement_timeout);
                c.exec("LISTEN popgate_networks");
                listening = true;
                lost_before_listening = 0;
                refresh_generation(c);
                follow_clock(c.clock_at_connect());
                health_.ok();
                auto next_check = clock::now() + opts_.network_check_interval;
                while (!st.stop_requested()) {
                    pollfd fds[2] = {{PQsocket(c.raw()), POLLIN, 0}, {wake_, POLLIN, 0}};
                    ::poll(fds, 2, 1000);
                    if (fds[1].revents) break;
                    if (fds[0].revents) {
                        if (!PQconsumeInput(c.raw()))
                            throw pg::lost_connection(std::string("network watcher: ") + PQerrorMessage(c.raw()));
                        bool heard = false;
                        while (PGnotify* n = PQnotifies(c.raw())) {
                            heard = true;
                            PQfreemem(n);
                        }
                        // The payload is the new generation, but two changes
                        // may arrive out of order: read the table itself.
                        if (heard) refresh_generation(c);
                    }
                    if (clock::now() >= next_check) {
                        refresh_generation(c);
                        follow_clock(c);
                        next_check = clock::now() + opts_.network_check_interval;
                    }
                }
            } catch (store_error const& e) {
                bool const lost = dynamic_cast<pg::connection_lost const*>(&e) != nullptr;
                if (listening || (lost && ++lost_before_listening < max_lost_in_a_row)) {
                    bool const again = clock::now() - last_quick <= std::chrono::seconds(1);
                    last_quick = clock::now();
                    spdlog::info("database network watcher lost its connection, reconnecting{} reason={}",
                                 again ? " in a second" : "", log::field(e.what(), 400));
                    if (again) {
                        pollfd fd{wake_, POLLIN, 0};
                        ::poll(&fd, 1, 1000);
                    }
                    continue;
                }
                health_.failed(e.what());
                pollfd fd{wake_, POLLIN, 0};
                ::poll(&fd, 1, static_cast<int>(health_.backoff().count()));
            }
        }
    }

    static void insert_user(pg::connection& c, user_record const& u, bool replace)
    {
        if (replace)
            c.run("INSERT INTO users (name, password_hash, shared_secret, disabled, apop_only)"
                  " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET"
                  " password_hash = excluded.password_hash, shared_secret = excluded.shared_secret,"
                  " disabled = excluded.disabled, apop_only = excluded.apop_only, updated_at = unixepoch()",
                  {p(u.name), p(u.password_hash), p(u.shared_secret), p(u.disabled), p(u.apop_only)});
        else
            c.run("INSERT INTO users (name, password_hash, shared_secret, disabled, apop_only)"
                  " VALUES ($1, $2, $3, $4, $5)",
                  {p(u.name), p(u.password_hash), p(u.shared_secret), p(u.disabled), p(u.apop_only)});
    }

    static void put_grant(pg::connection& c, grant const& g)
    {
        if (g.needs_user) {
            // FOR SHARE waits for an UPDATE or DELETE of the user in flight
            // and reads the row as it committed; one that comes later waits
            // for this commit, and its trigger then revokes the grant.
            // Logins of one user share the lock and do not wait on each
            // other. The wait is short: the batch's other logins wait
            // behind it, so a user row an administrator's open transaction
            // holds fails this login alone ([SYS/TEMP], the op undone by its
            // savepoint, the lock_timeout with it), not the whole batch.
            c.run("SET LOCAL lock_timeout = 250");
            std::optional<pg::result> r;
            try {
                r = c.run("SELECT password_hash, shared_secret FROM users WHERE name = $1 AND NOT disabled FOR SHARE",
                          {p(g.user)});
            } catch (store_error const& e) {
                if (e.code() != store_errc::busy) throw;
                throw store_error(store_errc::constraint, "relay_grants: user '" + g.user +
                                                              "' is being changed by another transaction; no grant");
            }
            c.run("SET LOCAL lock_timeout = DEFAULT");
            std::optional<credentials> found;
            if (r->rows() > 0) found = credentials{r->opt_text(0, 0), r->opt_text(0, 1)};
            check_grant_user(g, found);
        }
        // One row per address: a new login refreshes it, and never shortens
        // it (see overwrites()); the hit counter belongs to the address and
        // survives the refresh.
        c.run("INSERT INTO relay_grants (address, \"user\", method, tls, listener, granted_at, expires_at)"
              " VALUES ($1, $2, $3, $4, $5, $6, $7)"
              " ON CONFLICT (address) DO UPDATE SET \"user\" = excluded.\"user\", method = excluded.method,"
              " tls = excluded.tls, listener = excluded.listener, granted_at = excluded.granted_at,"
              " expires_at = excluded.expires_at WHERE $8 OR relay_grants.expires_at <= excluded.expires_at",
              {p(g.address), p(g.user), p(g.method), p(g.tls), p(g.listener), p(g.granted_at), p(g.expires_at),
               p(overwrites(g))});
        if (!g.audit_detail.empty()) put_audit(c, "grant", g.audit_address, g.user, g.audit_detail);
        if (g.user.empty()) return;
        // Who logged in at the address (sql/005): `grant list` counts them.
        c.run("INSERT INTO relay_grant_logins (address, \"user\", last_login, expires_at) VALUES ($1, $2, $3, $4)"
              " ON CONFLICT (address, \"user\") DO UPDATE SET last_login = excluded.last_login,"
              " expires_at = excluded.expires_at",
              {p(g.address), p(g.user), p(g.granted_at), p(g.expires_at)});
    }

    static void put_touch(pg::connection& c, grant_touch const& t)
    {
        // Quota counts add up for the same hour, start again for a newer one,
        // and are dropped for an older one (another node has moved on).
        c.run("UPDATE relay_grants SET hits = hits + $3::bigint,"
              " last_used = greatest(coalesce(last_used, 0), $2::bigint),"
              " quota_messages = CASE WHEN $4::bigint > quota_hour THEN $5::bigint"
              " WHEN $4::bigint = quota_hour THEN quota_messages + $5::bigint ELSE quota_messages END,"
              " quota_recipients = CASE WHEN $4::bigint > quota_hour THEN $6::bigint"
              " WHEN $4::bigint = quota_hour THEN quota_recipients + $6::bigint ELSE quota_recipients END,"
              " quota_hour = greatest(quota_hour, $4::bigint) WHERE address = $1::inet",
              {p(t.address), p(t.at), p(t.count), p(t.quota_hour), p(t.messages), p(t.recipients)});
    }

    static void put_cap(pg::connection& c, grant_cap const& k)
    {
        // The newest max - 1 grants of the user besides `keep` stay; the
        // others go, each with a 'revoke' audit row.
        auto const keep_others = static_cast<std::int64_t>(k.max > 0 ? k.max - 1 : 0);
        c.run("WITH victims AS (SELECT address FROM relay_grants WHERE \"user\" = $1 AND address <> $2::inet"
              " AND expires_at > $3 ORDER BY granted_at DESC, address DESC OFFSET $4),"
              " gone AS (DELETE FROM relay_grants WHERE address IN (SELECT address FROM victims) RETURNING address)"
              " INSERT INTO audit_log (event, address, \"user\", detail) SELECT 'revoke', host(address), $1, $5 FROM gone",
              {p(k.user), p(k.keep), p(k.at), p(keep_others), p(k.detail)});
    }

    static void put_audit(pg::connection& c, std::string_view event, std::string_view address, std::string_view user,
                          std::string_view detail)
    {
        c.run("INSERT INTO audit_log (event, address, \"user\", detail) VALUES ($1, $2, $3, $4)",
              {p(event), p(address), p(user), p(detail)});
    }

    std::string uri_;
    pg_options opts_;
    health health_;
    std::mutex mutex_;
    std::condition_variable freed_;
    std::vector<std::unique_ptr<pg::connection>> idle_;  // under mutex_
    std::size_t open_ = 0;                               // idle and lent; under mutex_
    std::atomic<std::int64_t> generation_{-1};
    std::atomic<clock::rep> held_up_at_{0};  // note_held_up(); 0: never
    std::atomic<std::int64_t> logged_offset_{0};  // follow_clock()'s last, as logged
    std::atomic<std::uint64_t> tickets_{0};
    std::mutex generation_mutex_;
    std::uint64_t generation_ticket_ = 0;  // of the read stored in generation_; under generation_mutex_
    int wake_ = -1;
    std::jthread watcher_;
};

}  // namespace

std::unique_ptr<store> open_pg_store(std::string const& uri, pg_options const& o)
{
    return std::make_unique<pg_store>(uri, o);
}

}  // namespace popgate::store
