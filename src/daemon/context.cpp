#include "popgate/daemon/context.hpp"

namespace popgate::daemon {

namespace {
auth::throttle_settings throttle_of(config::settings const& s)
{
    return {s.failure_window, s.max_failures_per_ip, s.block_time, s.failure_delay, s.failure_delay_max};
}
}  // namespace

context::context(std::shared_ptr<config::settings const> s, std::unique_ptr<store::store> db,
                 unsigned blocking_threads)
    : settings_(std::move(s)),
      db_(std::move(db)),
      blocking_(blocking_threads),
      writes_(*db_),
      relay_(*db_, settings_->ipv6_prefix),
      auth_(*db_),
      failures_(throttle_of(*settings_))
{
    auth_.set_cache_ttl(settings_->credential_cache_ttl);
}

context::~context() { blocking_.join(); }

std::shared_ptr<config::settings const> context::settings() const
{
    std::lock_guard lock(mutex_);
    return settings_;
}

void context::set_settings(std::shared_ptr<config::settings const> s)
{
    relay_.set_ipv6_prefix(s->ipv6_prefix);
    auth_.set_cache_ttl(s->credential_cache_ttl);
    // The counts themselves survive a reload; only the thresholds change.
    failures_.set_settings(throttle_of(*s));
    std::lock_guard lock(mutex_);
    settings_ = std::move(s);
}

std::shared_ptr<boost::asio::ssl::context> context::tls() const
{
    std::lock_guard lock(mutex_);
    return tls_;
}

void context::set_tls(std::shared_ptr<boost::asio::ssl::context> t)
{
    std::lock_guard lock(mutex_);
    tls_ = std::move(t);
}

bool context::admit(net::ip_address const& peer, std::string& why)
{
    auto const s = settings();
    std::lock_guard lock(mutex_);
    if (active_.load() >= s->max_sessions) {
        why = "too many sessions (limits.max_sessions=" + std::to_string(s->max_sessions) + ")";
        return false;
    }
    if (s->max_connections_per_minute > 0) {
        // Sliding one-minute window of connection times per address; counted
        // whether or not the connection is then admitted, so hammering does
        // not reset the window.
        auto const now = std::chrono::steady_clock::now();
        auto& times = recent_[peer];
        while (!times.empty() && times.front() <= now - std::chrono::minutes(1)) times.pop_front();
        times.push_back(now);
        if (recent_.size() > 100000) {
            // Bounded: forget addresses whose window is empty.
            for (auto it = recent_.begin(); it != recent_.end();)
                it = (it->second.empty() || it->second.back() <= now - std::chrono::minutes(1)) ? recent_.erase(it)
                                                                                             : std::next(it);
        }
        if (times.size() > s->max_connections_per_minute) {
            why = "too many connections from this address (limits.max_connections_per_minute=" +
                  std::to_string(s->max_connections_per_minute) + ")";
            return false;
        }
    }
    auto& n = per_ip_[peer];
    if (n >= s->max_sessions_per_ip) {
        why = "too many sessions from this address (limits.max_sessions_per_ip=" +
              std::to_string(s->max_sessions_per_ip) + ")";
        if (n == 0) per_ip_.erase(peer);
        return false;
    }
    ++n;
    ++active_;
    return true;
}

void context::release(net::ip_address const& peer)
{
    std::lock_guard lock(mutex_);
    auto it = per_ip_.find(peer);
    if (it != per_ip_.end() && --it->second == 0) per_ip_.erase(it);
    --active_;
}

bool context::lock_maildrop(std::string const& user)
{
    std::lock_guard lock(mutex_);
    return maildrops_.insert(user).second;
}

void context::unlock_maildrop(std::string const& user)
{
    std::lock_guard lock(mutex_);
    maildrops_.erase(user);
}

bool context::secure_for_plaintext(bool tls_active, net::ip_address const& peer) const
{
    auto const s = settings();
    switch (s->plaintext) {
    case config::plaintext_policy::always: return true;
    case config::plaintext_policy::never: return false;
    case config::plaintext_policy::tls_only: return tls_active || (s->loopback_is_secure && peer.is_loopback());
    }
    return false;
}

}  // namespace popgate::daemon
