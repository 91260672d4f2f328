#include "pg_util.hpp"

#include "popgate/config/config.hpp"
#include "popgate/log/log.hpp"
#include "popgate/metrics/catalog.hpp"

#include <spdlog/spdlog.h>

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <iterator>
#include <stdexcept>

namespace popgate::store::pg {

param p(std::string_view v) { return std::string(v); }
param p(std::string const& v) { return v; }
param p(std::int64_t v) { return std::to_string(v); }
param p(std::optional<std::string> const& v) { return v; }
param p(std::optional<std::int64_t> const& v)
{
    if (!v) return std::nullopt;
    return std::to_string(*v);
}

std::int64_t result::i64(int row, int col) const
{
    char const* v = PQgetvalue(r_.get(), row, col);
    std::int64_t out = 0;
    std::from_chars(v, v + std::char_traits<char>::length(v), out);
    return out;
}

std::optional<std::string> result::opt_text(int row, int col) const
{
    if (null(row, col)) return std::nullopt;
    return text(row, col);
}

std::optional<std::int64_t> result::opt_i64(int row, int col) const
{
    if (null(row, col)) return std::nullopt;
    return i64(row, col);
}

std::int64_t result::affected() const
{
    char const* v = PQcmdTuples(r_.get());
    std::int64_t out = 0;
    std::from_chars(v, v + std::char_traits<char>::length(v), out);
    return out;
}

namespace {

std::string trimmed(char const* s)
{
    std::string out = s ? s : "";
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    // libpq's multi-line messages (a DETAIL, a connection attempt per
    // address) become one line.
    for (auto& c : out)
        if (c == '\n' || c == '\t') c = ' ';
    return out;
}

store_error unavailable(std::string msg)
{
    metrics::database_errors.with({"unavailable"}).inc();
    return store_error(store_errc::unavailable, std::move(msg));
}



}  // namespace

connection::connection(std::string const& uri, std::chrono::milliseconds statement_timeout)
{
    // Defaults first: what the URI says, expanded from dbname, overrides them.
    char const* const keys[] = {"fallback_application_name", "connect_timeout", "dbname", nullptr};
    char const* const values[] = {"popgate", "5", uri.c_str(), nullptr};
    c_ = PQconnectdbParams(keys, values, 1);
    if (!c_) throw unavailable("PostgreSQL: out of memory");
    // The server's notices ("relation ... already exists, skipping") are not
    // for the administrator's terminal: debug log lines. An error that
    // arrives while the connection is idle comes this way too: a FATAL one
    // (an administrator's pg_terminate_backend, idle_session_timeout, a
    // shutdown) means the server is closing this connection, which libpq
    // itself only finds at the next read.
    PQsetNoticeReceiver(
        c_,
        [](void* self, PGresult const* r) {
            spdlog::debug("postgresql notice={}", log::field(trimmed(PQresultErrorMessage(r)), 400));
            char const* severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
            if (severity && (std::string_view(severity) == "FATAL" || std::string_view(severity) == "PANIC"))
                static_cast<connection*>(self)->broken_ = true;
        },
        this);
    if (PQstatus(c_) != CONNECTION_OK) {
        auto msg = "cannot connect to PostgreSQL " + redact(uri) + ": " + trimmed(PQerrorMessage(c_));
        PQfinish(c_);
        c_ = nullptr;
        throw unavailable(std::move(msg));
    }
    // A statement that waits (a lock held by an administrator's open
    // transaction, a failing-over server) fails after the store's busy
    // timeout instead of holding a blocking thread for ever.
    //
    // The server's own timeout cannot help when the server is not running
    // (frozen) or not reachable: each call also waits at most that long and
    // a second more on this side, then gives the connection up.
    if (statement_timeout.count() > 0) answer_limit_ = statement_timeout + std::chrono::seconds(1);
    // A POP3 login answers +OK once its grant committed. With a server's
    // synchronous_commit = off, a commit returns before its WAL is on disk,
    // and a crash then lost grants already answered for: such a session
    // asks for the local flush ("local"). A stronger setting (on,
    // remote_write, remote_apply: a synchronous standby) is left as it is.
    // The server's clock is read in the same round trip (no second
    // statement a server closing connections could cut in between).
    try {
        std::string const setup = "SET statement_timeout = " + std::to_string(statement_timeout.count()) +
                                  "; SET idle_in_transaction_session_timeout = 60000"
                                  "; SELECT set_config('synchronous_commit', 'local', false)"
                                  " WHERE current_setting('synchronous_commit') = 'off'; " +
                                  server_clock_sql;
        auto const before = std::chrono::steady_clock::now();
        PGresult* r = PQsendQuery(c_, setup.c_str()) ? await_result("statement", 4) : nullptr;
        if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) fail(r, "statement");
        auto const half = (std::chrono::steady_clock::now() - before) / 2;
        clock_at_connect_ = {std::stoll(PQgetvalue(r, 0, 0)), before + half};
        PQclear(r);
    } catch (...) {
        // No destructor runs for an object whose constructor throws.
        PQfinish(c_);
        c_ = nullptr;
        throw;
    }
}

connection::~connection()
{
    if (c_) PQfinish(c_);
}

bool connection::went_stale()
{
    if (broken()) return counted_lost();
    pollfd pfd{PQsocket(c_), POLLIN, 0};
    if (::poll(&pfd, 1, 0) <= 0) return false;
    // Something arrived on an idle connection: a notice, or the server's
    // goodbye (its FATAL error, parsed by PQnotifies and flagged by the
    // notice receiver, then the end of the stream). Read it; a dead
    // connection shows as CONNECTION_BAD.
    for (int reads = 0; reads < 4 && !broken(); ++reads) {
        if (!PQconsumeInput(c_)) broken_ = true;
        while (PGnotify* n = PQnotifies(c_)) PQfreemem(n);
        if (::poll(&pfd, 1, 0) <= 0) break;
    }
    return broken() && counted_lost();
}

bool connection::counted_lost() noexcept
{
    metrics::database_errors.with({"lost"}).inc();
    return true;
}

void connection::fail(PGresult* r, std::string_view what)
{
    result owned(r);  // cleared on the way out
    if (!r || PQstatus(c_) != CONNECTION_OK) {
        broken_ = true;
        throw lost_connection("PostgreSQL connection lost (" + std::string(what) + "): " + trimmed(PQerrorMessage(c_)));
    }
    char const* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    std::string const sqlstate = state ? state : "";
    std::string primary = trimmed(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
    char const* constraint = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
    // Class 23: the row broke a rule. Constraint names in sql/postgresql are
    // written as explanations, as in SQLite: the administrator reads the rule.
    if (sqlstate == "23505")
        throw store_error(store_errc::duplicate, constraint ? std::string(constraint) + ": duplicate" : primary);
    if (sqlstate == "23514" && constraint) throw store_error(store_errc::constraint, constraint);
    if (sqlstate.starts_with("23") || sqlstate.starts_with("22") || sqlstate == "P0001")
        throw store_error(store_errc::constraint, primary);
    if (sqlstate == "40001" || sqlstate == "40P01" || sqlstate == "55P03" || sqlstate == "57014") {
        metrics::database_errors.with({"busy"}).inc();
        throw store_error(store_errc::busy, "database busy (" + primary + ")");
    }
    // 08 (connection), 57P0x (shutdown, cannot connect now), 53 (resources),
    // 25P03 (idle transaction timeout), and anything else: try again later.
    auto msg = "PostgreSQL " + std::string(what) + ": " + primary + (sqlstate.empty() ? "" : " (" + sqlstate + ")");
    if (sqlstate.starts_with("08") || sqlstate.starts_with("57P")) {
        broken_ = true;
        throw lost_connection(std::move(msg));
    }
    throw unavailable(std::move(msg));
}

PGresult* connection::await_result(std::string_view what, std::size_t statements)
{
    using clock = std::chrono::steady_clock;
    auto const allowed = answer_limit_ * static_cast<std::int64_t>(statements);
    auto limit = clock::now() + allowed;
    PGresult* kept = nullptr;
    for (;;) {
        while (answer_limit_.count() > 0 && PQisBusy(c_)) {
            auto const left = std::chrono::ceil<std::chrono::milliseconds>(limit - clock::now());
            if (left.count() <= 0) {
                if (kept) PQclear(kept);
                broken_ = timed_out_ = true;  // the answer may still come: this connection is done
                throw unavailable("PostgreSQL did not answer within " + std::to_string(allowed.count()) +
                                  " ms (" + std::string(what) + ")");
            }
            pollfd pfd{PQsocket(c_), POLLIN, 0};
            int const rc = ::poll(&pfd, 1, static_cast<int>(left.count()));
            if (rc < 0 && errno != EINTR) break;  // PQgetResult reports the failure
            if (rc > 0 && !PQconsumeInput(c_)) break;
        }
        PGresult* r = PQgetResult(c_);  // blocks only without a limit, or once the answer is in
        if (!r) return kept;
        auto const ok = [](PGresult* x) {
            auto const st = PQresultStatus(x);
            return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
        };
        if (kept && !ok(kept)) {
            PQclear(r);  // an error came first: it is the one to report
        } else {
            if (kept) PQclear(kept);
            kept = r;
        }
        limit = clock::now() + allowed;  // the rest of a multi-statement command
    }
}

result connection::run(char const* sql, std::initializer_list<param> params)
{
    maybe_ran_ = false;
    auto it = prepared_.find(sql);
    if (it == prepared_.end()) {
        std::string name = "s" + std::to_string(prepared_.size());
        PGresult* r = PQsendPrepare(c_, name.c_str(), sql, static_cast<int>(params.size()), nullptr)
                          ? await_result("prepare")
                          : nullptr;
        if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) fail(r, "prepare");
        PQclear(r);
        it = prepared_.emplace(sql, std::move(name)).first;
    }
    char const* values[16] = {};
    if (params.size() > std::size(values)) throw std::logic_error("pg::connection::run: too many parameters");
    int i = 0;
    for (auto const& v : params) {
        // Text parameters go as C strings: one holding a NUL would reach
        // PostgreSQL cut short (a shared secret "\0..." as ""), and its
        // text type cannot hold one anyway.
        if (v && v->find('\0') != std::string::npos)
            throw store_error(store_errc::constraint, "a value holding a NUL byte, which PostgreSQL text cannot hold");
        values[i++] = v ? v->c_str() : nullptr;
    }
    maybe_ran_ = PQsendQueryPrepared(c_, it->second.c_str(), i, values, nullptr, nullptr, 0) == 1;
    PGresult* r = maybe_ran_ ? await_result("query") : nullptr;
    auto const st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) fail(r, "query");
    return result(r);
}

void connection::exec(std::string const& sql)
{
    // Each ';' may end a statement (or sit in a function body: a longer limit).
    auto const statements = 1 + static_cast<std::size_t>(std::count(sql.begin(), sql.end(), ';'));
    maybe_ran_ = PQsendQuery(c_, sql.c_str()) == 1;
    PGresult* r = maybe_ran_ ? await_result("statement", statements) : nullptr;
    auto const st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) fail(r, "statement");
    PQclear(r);
}

connection_lost lost_connection(std::string const& msg)
{
    metrics::database_errors.with({"lost"}).inc();
    return connection_lost(msg);
}

std::string redact(std::string_view uri)
{
    std::string out(uri);
    // postgresql://user:secret@host/db -> postgresql://user@host/db, read
    // where libpq reads it (config::uri_userinfo).
    if (auto const info = config::uri_userinfo(out); !info.empty()) {
        if (auto const colon = info.find(':'); colon != std::string_view::npos) {
            auto const from = static_cast<std::size_t>(info.data() - out.data()) + colon;
            out.erase(from, info.size() - colon);
        }
    }
    // ...?password=secret&... (or pass%77ord=: libpq decodes names) -> ***
    if (auto const q = out.find('?'); q != std::string::npos) {
        std::string query;
        std::string_view rest = std::string_view(out).substr(q + 1);
        for (bool first = true;; first = false) {
            auto const amp = rest.find('&');
            auto const item = rest.substr(0, amp);
            auto const eq = item.find('=');
            if (!first) query += '&';
            auto const name = item.substr(0, eq);  // the whole item when it has no '='
            if (config::is_password_parameter(name)) {
                // The name as written, unless it holds the value itself
                // ("password%3Dsecret").
                if (eq == std::string_view::npos || name.find('%') != std::string_view::npos)
                    query.append("***");
                else
                    query.append(item.substr(0, eq + 1)).append("***");
            } else {
                query.append(item);
            }
            if (amp == std::string_view::npos) break;
            rest = rest.substr(amp + 1);
        }
        out = out.substr(0, q + 1) + query;
    }
    return out;
}

}  // namespace popgate::store::pg
