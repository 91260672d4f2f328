#pragma once
// Health endpoints for load balancers, systemd and monitoring:
//   GET /healthz  200 "ok": the process is alive and its I/O threads answer.
//   GET /readyz   200 "ready": every listener is bound and the database
//                 answers a read; else 503 with the reason on one line.
#include "popgate/session/http/http_route.hpp"
#include "popgate/store/store.hpp"

#include <boost/asio/thread_pool.hpp>

#include <atomic>

namespace popgate::session {

// What the daemon is doing, as /readyz reports it.
enum class serving_state { starting, serving, draining };

class healthz_route final : public http_route {
public:
    std::string_view path() const noexcept override { return "/healthz"; }
    std::span<beast_http::verb const> methods() const noexcept override;
    boost::asio::awaitable<http_reply> serve(http_exchange& x) override;
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

}  // namespace popgate::session
