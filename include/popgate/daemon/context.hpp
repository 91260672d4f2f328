#pragma once
// The daemon's wiring: the one room that knows every service. It owns the
// store, the blocking pool, the writer, the caches and counters, and hands
// each protocol the few of them it uses (session::pop3_services, ...).
#include "popgate/auth/authenticator.hpp"
#include "popgate/auth/failure_tracker.hpp"
#include "popgate/config/config.hpp"
#include "popgate/mail/maildir.hpp"
#include "popgate/relay/decider.hpp"
#include "popgate/relay/grant_issuer.hpp"
#include "popgate/relay/policy.hpp"
#include "popgate/relay/smtp_client.hpp"
#include "popgate/server/admission.hpp"
#include "popgate/server/frame.hpp"
#include "popgate/server/protocol.hpp"
#include "popgate/session/http/health_routes.hpp"
#include "popgate/session/http/http_route.hpp"
#include "popgate/store/store.hpp"
#include "popgate/store/write_queue.hpp"

#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace popgate::session {
struct pop3_services;
struct smtp_services;
struct policy_services;
struct http_services;
}  // namespace popgate::session

namespace popgate::daemon {

class context {
public:
    context(std::shared_ptr<config::settings const> s, std::unique_ptr<store::store> db, unsigned blocking_threads);
    ~context();
    context(context const&) = delete;
    context& operator=(context const&) = delete;

    std::shared_ptr<config::settings const> settings() const { return live_.settings(); }
    // SIGHUP: new sessions start with `s`; the services that keep a setting
    // of their own (grant keys, credential cache, brute-force thresholds) take it too.
    void reload(std::shared_ptr<config::settings const> s);
    server::live_config& live() noexcept { return live_; }
    server::frame_env frame_env() noexcept { return {live_, admission_, sessions_}; }
    // The end of a SIGTERM drain cuts what is still open through this.
    server::open_sessions& sessions() noexcept { return sessions_; }
    std::size_t active_sessions() const noexcept { return admission_.active(); }

    store::store& db() noexcept { return *db_; }
    boost::asio::thread_pool& blocking() noexcept { return blocking_; }
    store::write_queue& writes() noexcept { return writes_; }
    relay::upstream_pool& upstreams() noexcept { return upstreams_; }
    auth::failure_tracker& failures() noexcept { return failures_; }
    relay::decider& decider() noexcept { return decider_; }
    // What every writer of login grants goes through (the guard rails).
    relay::grant_issuer& grant_issuer() noexcept { return grant_issuer_; }

    // The services of each protocol.
    session::pop3_services pop3_services();
    session::smtp_services smtp_services();
    session::policy_services policy_services();
    session::http_services http_services();

    // What /readyz reports: serve() sets serving once every listener is
    // bound and accepting, draining at SIGTERM.
    void set_state(session::serving_state s) noexcept { state_.store(s); }

    // /healthz probes these I/O threads (serve() calls it once they exist).
    void watch_io_threads(io::io_threads const& threads) noexcept;

    // The registered protocol of that name (daemon/protocols.cpp), or nullptr.
    server::protocol* protocol(std::string_view name) noexcept;

private:
    server::live_config live_;
    std::unique_ptr<store::store> db_;
    boost::asio::thread_pool blocking_;
    store::write_queue writes_;  // after db_: stopped (and drained) before it closes
    mail::size_cache sizes_;
    relay::upstream_pool upstreams_;
    relay::decider decider_;
    relay::policy relay_;
    relay::grant_issuer grant_issuer_;
    auth::authenticator auth_;
    auth::failure_tracker failures_;
    server::admission_control admission_;
    server::open_sessions sessions_;
    std::atomic<std::uint64_t> data_in_flight_{0};
    std::atomic<session::serving_state> state_{session::serving_state::starting};
    // The HTTP listener's routes, in the order they are matched.
    std::vector<std::unique_ptr<session::http_route>> http_routes_;
    std::vector<session::http_route*> http_route_list_;
    session::healthz_route* healthz_ = nullptr;  // one of http_routes_
    std::vector<std::unique_ptr<server::protocol>> protocols_;  // last: they hold references to the rest
};

// Every protocol a listener can name, built over the context's services.
std::vector<std::unique_ptr<server::protocol>> make_protocols(context& c);

}  // namespace popgate::daemon
