#include "popgate/server/admission.hpp"

#include <algorithm>

namespace popgate::server {

std::size_t address_window::add(net::ip_address const& peer, time_point now)
{
    auto& times = times_[peer];
    while (!times.empty() && times.front() <= now - window_) times.pop_front();
    times.push_back(now);
    if (times_.size() > sweep_at_) {
        // Bounded: forget addresses whose window is over (never `peer`,
        // whose event is now).
        for (auto it = times_.begin(); it != times_.end();)
            it = (it->second.empty() || it->second.back() <= now - window_) ? times_.erase(it) : std::next(it);
        sweep_at_ = std::max(first_sweep, 2 * times_.size());
    }
    return times.size();  // map nodes stay put: `times` was not erased
}

std::size_t address_window::count(net::ip_address const& peer, time_point now)
{
    auto const it = times_.find(peer);
    if (it == times_.end()) return 0;
    auto& times = it->second;
    while (!times.empty() && times.front() <= now - window_) times.pop_front();
    if (!times.empty()) return times.size();
    times_.erase(it);
    return 0;
}

bool admission_control::admit(net::ip_address const& peer, config::settings const& s, refusal& why,
                              address_limits l, std::string_view service)
{
    // The limit's key names it twice: as the reason, and in the words.
    auto const refuse = [&why](std::string_view key, std::size_t value, std::string words,
                               std::string_view tail = {}) {
        why = {key, words + " (limits." + std::string(key) + "=" + std::to_string(value) + std::string(tail) + ")"};
        return false;
    };
    std::lock_guard lock(mutex_);
    if (l == address_limits::exempt) {
        auto it = service_active_.find(service);
        if (it == service_active_.end()) it = service_active_.emplace(std::string(service), 0).first;
        if (it->second >= s.max_service_sessions)
            return refuse("max_service_sessions", s.max_service_sessions,
                          "too many " + std::string(service.empty() ? "service" : service) + " sessions");
        ++it->second;
        return true;
    }
    if (active_.load() >= s.max_sessions) return refuse("max_sessions", s.max_sessions, "too many sessions");
    auto const now = std::chrono::steady_clock::now();
    // Counted whether or not the connection is then admitted, so hammering
    // does not reset the window.
    bool const windows = l == address_limits::apply;
    if (windows && s.max_connections_per_minute > 0 && recent_.add(peer, now) > s.max_connections_per_minute)
        return refuse("max_connections_per_minute", s.max_connections_per_minute,
                      "too many connections from this address");
    if (windows && s.max_slow_sessions_per_ip > 0 && slow_.count(peer, now) >= s.max_slow_sessions_per_ip)
        return refuse("max_slow_sessions_per_ip", s.max_slow_sessions_per_ip,
                      "too many slow sessions from this address", " in 10 minutes");
    auto& n = per_ip_[peer];
    if (n >= s.max_sessions_per_ip) {
        if (n == 0) per_ip_.erase(peer);
        return refuse("max_sessions_per_ip", s.max_sessions_per_ip, "too many sessions from this address");
    }
    ++n;
    ++active_;
    return true;
}

std::size_t admission_control::note_slow(net::ip_address const& peer)
{
    std::lock_guard lock(mutex_);
    return slow_.add(peer, std::chrono::steady_clock::now());
}

void admission_control::release(net::ip_address const& peer, address_limits l, std::string_view service)
{
    std::lock_guard lock(mutex_);
    if (l == address_limits::exempt) {
        if (auto it = service_active_.find(service); it != service_active_.end()) --it->second;
        return;
    }
    auto it = per_ip_.find(peer);
    if (it != per_ip_.end() && --it->second == 0) per_ip_.erase(it);
    --active_;
}

}  // namespace popgate::server
