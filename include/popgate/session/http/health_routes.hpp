#pragma once
// Health endpoints for load balancers, systemd and monitoring:
//   GET /healthz  200 "ok": the process is alive and every I/O thread runs a
//                 posted no-op within healthz_route::limit; else 503 naming
//                 the threads that did not (one stuck thread holds every
//                 connection placed on it).
//   GET /readyz   200 "ready": every listener is bound and the database
//                 answers a read; else 503 with the reason on one line.
//   GET /metrics  every popgate_* metric (metrics/catalog.hpp) in the
//                 Prometheus text exposition format 0.0.4.
#include "popgate/io/io_threads.hpp"
#include "popgate/session/http/http_route.hpp"
#include "popgate/store/store.hpp"

#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <chrono>

namespace popgate::session {

// What the daemon is doing, as /readyz reports it.
enum class serving_state { starting, serving, draining };

class healthz_route final : public http_route {
public:
    static constexpr std::chrono::milliseconds limit{1000};
    std::string_view path() const noexcept override { return "/healthz"; }
    std::span<beast_http::verb const> methods() const noexcept override;
    boost::asio::awaitable<http_reply> serve(http_exchange& x) override;
    // The I/O threads to probe, once the daemon has made them (before the
    // listeners open).
    void watch(io::io_threads const& threads) noexcept { threads_.store(&threads); }

private:
    std::atomic<io::io_threads const*> threads_{nullptr};
};

class readyz_route final : public http_route {
public:
    readyz_route(std::atomic<serving_state> const& state, store::store& db, boost::asio::thread_pool& blocking)
        : state_(state), db_(db), blocking_(blocking)
    {
    }
    std::string_view path() const noexcept override { return "/readyz"; }
    std::span<beast_http::verb const> methods() const noexcept override;
    boost::asio::awaitable<http_reply> serve(http_exchange& x) override;

private:
    std::atomic<serving_state> const& state_;
    store::store& db_;
    boost::asio::thread_pool& blocking_;  // the database read runs there
};

inline constexpr std::string_view prometheus_content_type = "text/plain; version=0.0.4; charset=utf-8";

// popgate_grants_active is read from the database at each scrape (one count
// over the expires_at index, on the blocking pool); when the database does
// not answer, the scrape still succeeds with the last value read, and
// popgate_database_errors_total says why.
class metrics_route final : public http_route {
public:
    metrics_route(store::store& db, boost::asio::thread_pool& blocking) : db_(db), blocking_(blocking) {}
    std::string_view path() const noexcept override { return "/metrics"; }
    std::span<beast_http::verb const> methods() const noexcept override;
    boost::asio::awaitable<http_reply> serve(http_exchange& x) override;

private:
    store::store& db_;
    boost::asio::thread_pool& blocking_;  // the count runs there
};

}  // namespace popgate::session
