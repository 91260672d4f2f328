#include "popgate/daemon/context.hpp"

#include "popgate/metrics/catalog.hpp"
#include "popgate/session/policy/policy_protocol.hpp"
#include "popgate/session/http/dovecot_policy.hpp"
#include "popgate/session/http/http_protocol.hpp"
#include "popgate/session/pop3/pop3_protocol.hpp"
#include "popgate/session/smtp/smtp_protocol.hpp"

namespace popgate::daemon {

namespace {
auth::throttle_settings throttle_of(config::settings const& s)
{
    return {s.failure_window,   s.max_failures_per_user, s.max_failures_per_ip, s.max_users_per_ip,
            s.block_time,       s.failure_delay,         s.failure_delay_max};
}
}  // namespace

context::context(std::shared_ptr<config::settings const> s, std::unique_ptr<store::store> db,
                 unsigned blocking_threads)
    : live_(s),
      db_(std::move(db)),
      blocking_(blocking_threads),
      writes_(*db_, s->busy_timeout),
      decider_(*db_, s->ipv6_prefix),
      relay_(decider_, *db_, writes_),
      grant_issuer_(decider_, *db_),
      auth_(*db_),
      failures_(throttle_of(*s))
{
    auth_.set_cache_ttl(s->credential_cache_ttl);
    decider_.set_no_grant_networks(s->no_grant_networks);
    // One line per route.
    auto healthz = std::make_unique<session::healthz_route>();
    healthz_ = healthz.get();
    http_routes_.push_back(std::move(healthz));
    http_routes_.push_back(std::make_unique<session::readyz_route>(state_, *db_, blocking_));
    http_routes_.push_back(std::make_unique<session::dovecot_policy_route>(blocking_, writes_, grant_issuer_));
    http_routes_.push_back(std::make_unique<session::metrics_route>(*db_, blocking_));
    // The listeners' series exist (at 0) before their first connection.
    for (auto const& l : s->listeners)
        metrics::declare_listener(l.name, l.protocol, l.tls != config::tls_mode::none);
    for (auto const& r : http_routes_) http_route_list_.push_back(r.get());
    protocols_ = make_protocols(*this);
}

context::~context() { blocking_.join(); }

void context::watch_io_threads(io::io_threads const& threads) noexcept { healthz_->watch(threads); }

void context::reload(std::shared_ptr<config::settings const> s)
{
    decider_.set_ipv6_prefix(s->ipv6_prefix);
    decider_.set_no_grant_networks(s->no_grant_networks);
    auth_.set_cache_ttl(s->credential_cache_ttl);
    // The counts themselves survive a reload; only the thresholds change.
    failures_.set_settings(throttle_of(*s));
    writes_.set_busy_timeout(s->busy_timeout);
    live_.set_settings(std::move(s));
}

session::pop3_services context::pop3_services()
{
    return {blocking_, auth_, {failures_, writes_}, writes_, sizes_, grant_issuer_};
}

session::smtp_services context::smtp_services()
{
    return {blocking_, auth_, {failures_, writes_}, relay_, upstreams_, data_in_flight_};
}

session::policy_services context::policy_services()
{
    return {relay_, blocking_};
}

session::http_services context::http_services() { return {http_route_list_}; }

server::protocol* context::protocol(std::string_view name) noexcept
{
    for (auto& p : protocols_)
        if (p->name() == name) return p.get();
    return nullptr;
}

}  // namespace popgate::daemon
