#include "popgate/session/http/health_routes.hpp"

// GCC 12 reports the coroutine frames' own operator new/delete pair as
// mismatched once inlining sees both (GCC bug 109224, a false positive).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include "popgate/io/blocking.hpp"
#include "popgate/log/log.hpp"
#include "popgate/metrics/catalog.hpp"
#include "popgate/store/migrate.hpp"

#include <spdlog/spdlog.h>

#include <array>

namespace popgate::session {
namespace {
constexpr std::array get_only{beast_http::verb::get};
}  // namespace

std::span<beast_http::verb const> healthz_route::methods() const noexcept { return get_only; }

boost::asio::awaitable<http_reply> healthz_route::serve(http_exchange& x)
{
    auto const* threads = threads_.load();
    if (!threads) co_return http_text(200, "ok\n");  // not serving yet: no listener to ask through
    auto const silent = co_await io::unanswered(threads->executors(), limit);
    if (silent.empty()) co_return http_text(200, "ok\n");
    std::string which;
    for (auto const i : silent) which += (which.empty() ? "" : ",") + std::to_string(i);
    spdlog::error("sid={} http healthz I/O threads not answering threads={} of={} limit_ms={}", x.conn.sid, which,
                  threads->size(), limit.count());
    co_return http_text(503, "unhealthy: I/O thread " + which + " of " + std::to_string(threads->size()) +
                                 " did not answer within " + std::to_string(limit.count()) + " ms\n");
}

std::span<beast_http::verb const> readyz_route::methods() const noexcept { return get_only; }

boost::asio::awaitable<http_reply> readyz_route::serve(http_exchange& x)
{
    switch (state_.load()) {
    case serving_state::starting: co_return http_text(503, "not ready: listeners not bound yet\n");
    case serving_state::draining: co_return http_text(503, "not ready: draining (shutting down)\n");
    case serving_state::serving: break;
    }
    // A read of the schema version: the same check of the file (deleted,
    // replaced) and the same connection pool as a relay decision's read.
    std::string error;
    int version = 0;
    try {
        auto job = [this] { return db_.schema_version(); };
        version = co_await io::run_blocking(blocking_, job);
    } catch (std::exception const& e) {
        error = e.what();
    }
    if (!error.empty()) {
        spdlog::warn("sid={} http readyz database unavailable error={}", x.conn.sid, log::field(error));
        co_return http_text(503, "not ready: database unavailable\n");
    }
    // A database emptied or replaced under the running node (dropped and
    // created again on PostgreSQL) answered the read and every login and
    // decision failed. A newer schema (another node upgraded first) is
    // served on: taking every older node out at once would stop the site.
    if (int const needed = store::latest_schema_version(); version < needed) {
        spdlog::warn("sid={} http readyz database schema is {}, this popgate needs {}: restart it to migrate",
                     x.conn.sid, version, needed);
        co_return http_text(503, "not ready: database schema " + std::to_string(version) + ", this popgate needs " +
                                     std::to_string(needed) + "\n");
    }
    co_return http_text(200, "ready\n");
}

std::span<beast_http::verb const> metrics_route::methods() const noexcept { return get_only; }

boost::asio::awaitable<http_reply> metrics_route::serve(http_exchange& x)
{
    std::string error;
    try {
        auto job = [this] { return db_.count_active_grants(store::now()); };
        std::size_t const active = co_await io::run_blocking(blocking_, job);
        metrics::grants_active.get().set(static_cast<std::int64_t>(active));
    } catch (std::exception const& e) {
        error = e.what();
    }
    if (!error.empty())
        spdlog::warn("sid={} http metrics grants_active not read error={}", x.conn.sid, log::field(error));
    http_reply r;
    r.body = metrics::process().render();
    r.content_type = prometheus_content_type;
    co_return r;
}

}  // namespace popgate::session
