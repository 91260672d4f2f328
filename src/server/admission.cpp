#include "popgate/server/admission.hpp"

namespace popgate::server {

namespace {
constexpr std::chrono::minutes slow_window{10};
}

bool admission_control::admit(net::ip_address const& peer, config::settings const& s, std::string& why)
{
    std::lock_guard lock(mutex_);
    if (active_.load() >= s.max_sessions) {
        why = "too many sessions (limits.max_sessions=" + std::to_string(s.max_sessions) + ")";
        return false;
    }
    if (s.max_connections_per_minute > 0) {
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
        if (times.size() > s.max_connections_per_minute) {
            why = "too many connections from this address (limits.max_connections_per_minute=" +
                  std::to_string(s.max_connections_per_minute) + ")";
            return false;
        }
    }
    if (s.max_slow_sessions_per_ip > 0) {
        auto const it = slow_.find(peer);
        if (it != slow_.end()) {
            auto const now = std::chrono::steady_clock::now();
            auto& times = it->second;
            while (!times.empty() && times.front() <= now - slow_window) times.pop_front();
            if (times.empty()) {
                slow_.erase(it);
            } else if (times.size() >= s.max_slow_sessions_per_ip) {
                why = "too many slow sessions from this address (limits.max_slow_sessions_per_ip=" +
                      std::to_string(s.max_slow_sessions_per_ip) + " in 10 minutes)";
                return false;
            }
        }
    }
    auto& n = per_ip_[peer];
    if (n >= s.max_sessions_per_ip) {
        why = "too many sessions from this address (limits.max_sessions_per_ip=" +
              std::to_string(s.max_sessions_per_ip) + ")";
        if (n == 0) per_ip_.erase(peer);
        return false;
    }
    ++n;
    ++active_;
    return true;
}

std::size_t admission_control::note_slow(net::ip_address const& peer)
{
    std::lock_guard lock(mutex_);
    auto const now = std::chrono::steady_clock::now();
    if (slow_.size() > 100000) {
        // Bounded: forget addresses whose window is over.
        for (auto it = slow_.begin(); it != slow_.end();)
            it = (it->second.empty() || it->second.back() <= now - slow_window) ? slow_.erase(it) : std::next(it);
    }
    auto& times = slow_[peer];
    while (!times.empty() && times.front() <= now - slow_window) times.pop_front();
    times.push_back(now);
    return times.size();
}

void admission_control::release(net::ip_address const& peer)
{
    std::lock_guard lock(mutex_);
    auto it = per_ip_.find(peer);
    if (it != per_ip_.end() && --it->second == 0) per_ip_.erase(it);
    --active_;
}

}  // namespace popgate::server
