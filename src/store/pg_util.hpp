#pragma once
// Thin RAII over libpq, private to the PostgreSQL store: one connection with
// its prepared statements, results read as text, and PostgreSQL's errors
// turned into store_error with a message fit for an administrator.
#include "popgate/store/store.hpp"

#include <libpq-fe.h>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace popgate::store::pg {

// One text parameter, or NULL.
using param = std::optional<std::string>;
param p(std::string_view v);
param p(std::string const& v);
param p(std::int64_t v);
// Only a real bool: an integer or a pointer must not quietly become one.
template <class B>
    requires std::same_as<B, bool>
param p(B v)
{
    return std::string(v ? "t" : "f");
}
param p(std::optional<std::string> const& v);
param p(std::optional<std::int64_t> const& v);

class result {
public:
    explicit result(PGresult* r) : r_(r, PQclear) {}
    int rows() const noexcept { return PQntuples(r_.get()); }
    bool null(int row, int col) const noexcept { return PQgetisnull(r_.get(), row, col) != 0; }
    std::string text(int row, int col) const { return PQgetvalue(r_.get(), row, col); }
    std::optional<std::string> opt_text(int row, int col) const;
    std::int64_t i64(int row, int col) const;
    std::optional<std::int64_t> opt_i64(int row, int col) const;
    bool boolean(int row, int col) const noexcept { return PQgetvalue(r_.get(), row, col)[0] == 't'; }
    std::int64_t affected() const;  // rows an INSERT/UPDATE/DELETE changed

private:
    std::unique_ptr<PGresult, void (*)(PGresult*)> r_;
};

// The server closed a connection it had accepted (an administrator's
// pg_terminate_backend, idle_session_timeout, a shutdown; or a pooler in
// front of it, SQLSTATE 08, whose server may be down): the store may try
// another connection before it calls the server unreachable. A connect that
// fails is a plain store_error.
class connection_lost : public store_error {
public:
    explicit connection_lost(std::string const& what) : store_error(store_errc::unavailable, what) {}
};

// The server's clock, Unix milliseconds: read in each connection's setup
// and again by the network watcher.
inline constexpr char server_clock_sql[] = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";

// Counted as popgate_database_errors_total{kind="lost"} where it happens;
// the store counts "unavailable" too when the call it broke fails for it.
connection_lost lost_connection(std::string const& msg);

class connection {
public:
    // Connects (blocking: never on an I/O thread). Throws store_error
    // (unavailable) with libpq's reason, or connection_lost when the server
    // closed the connection during its setup; the URI's password never
    // appears: it is refused by the configuration before this is reached.
    connection(std::string const& conninfo, std::chrono::milliseconds statement_timeout);
    ~connection();
    connection(connection const&) = delete;
    connection& operator=(connection const&) = delete;

    // Runs `sql` as a prepared statement (prepared on first use on this
    // connection; `sql` must be a string literal: its address is the key).
    result run(char const* sql, std::initializer_list<param> params = {});
    // Runs one or more statements without parameters (simple query protocol).
    void exec(std::string const& sql);

    // The server closed the connection, or a call found it dead: the pool
    // drops it instead of handing it out again.
    bool broken() const noexcept { return broken_ || PQstatus(c_) != CONNECTION_OK; }
    // Broken because the server did not answer in time (the call was sent
    // and may have run): not worth trying again elsewhere.
    bool timed_out() const noexcept { return timed_out_; }
    // Without blocking: has the server sent something (an error, a close)
    // while the connection sat idle? Then it is not worth reusing (and
    // counted "lost").
    bool went_stale();
    // The last run() or exec() sent its statement: when the connection was
    // lost after that, the statement may have run (and committed).
    bool maybe_ran() const noexcept { return maybe_ran_; }
    bool in_transaction() const noexcept { return PQtransactionStatus(c_) != PQTRANS_IDLE; }
    PGconn* raw() const noexcept { return c_; }
    // The server's Unix milliseconds, read with the session's settings,
    // and this side's steady clock at the middle of that round trip.
    struct clock_reading {
        std::int64_t server_ms = 0;
        std::chrono::steady_clock::time_point at{};
    };
    clock_reading const& clock_at_connect() const noexcept { return clock_at_connect_; }

private:
    bool counted_lost() noexcept;
    bool maybe_ran_ = false;
    [[noreturn]] void fail(PGresult* r, std::string_view what);
    // The result of the command just sent (the first error, else the last
    // result), waiting at most answer_limit_: a server that stops answering
    // while the TCP connection stays up (a frozen host, a network cut, a
    // failover that left the old address behind) would otherwise hold a
    // blocking thread until the kernel gives up on TCP, some 15 minutes.
    // `statements`: how many the command holds; the server's timeout is per
    // statement and it sends their results together at the end, so the
    // limit is that many times the per-statement one.
    PGresult* await_result(std::string_view what, std::size_t statements = 1);
    PGconn* c_ = nullptr;
    bool broken_ = false;
    bool timed_out_ = false;
    std::chrono::milliseconds answer_limit_{0};  // 0: none, per statement
    clock_reading clock_at_connect_;
    std::unordered_map<char const*, std::string> prepared_;
};

// A URI with its user:password@ part and any password= parameter taken out,
// for log lines and error messages.
std::string redact(std::string_view uri);

}  // namespace popgate::store::pg
