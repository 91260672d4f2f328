#include "popgate/auth/failure_tracker.hpp"

#include <algorithm>

namespace popgate::auth {

void failure_tracker::set_settings(throttle_settings s)
{
    std::lock_guard lock(mutex_);
    s_ = s;
}

void failure_tracker::prune(std::deque<time_point>& q, time_point cutoff)
{
    while (!q.empty() && q.front() <= cutoff) q.pop_front();
}

std::optional<std::chrono::seconds> failure_tracker::blocked(net::ip_address const& ip, time_point now)
{
    std::lock_guard lock(mutex_);
    auto it = blocked_until_.find(ip);
    if (it == blocked_until_.end()) return std::nullopt;
    if (it->second <= now) {
        blocked_until_.erase(it);
        return std::nullopt;
    }
    return std::chrono::ceil<std::chrono::seconds>(it->second - now);
}

failure_tracker::failure_verdict failure_tracker::record_failure(net::ip_address const& ip, std::string const& user,
                                                                 time_point now)
{
    std::lock_guard lock(mutex_);
    auto const cutoff = now - s_.window;
    auto& by_ip = ip_failures_[ip];
    prune(by_ip, cutoff);
    by_ip.push_back(now);
    std::size_t user_count = 0;
    if (!user.empty()) {
        // Bounded: a flood of random names must not grow memory without end.
        if (user_failures_.size() > 100000) user_failures_.clear();
        auto& by_user = user_failures_[user];
        prune(by_user, cutoff);
        by_user.push_back(now);
        user_count = by_user.size();
    }
    std::size_t const n = std::max(by_ip.size(), user_count);
    // base, 2*base, 4*base ... capped: a guesser's rate falls fast, a user who
    // mistyped once waits only the base delay.
    auto delay = s_.base_delay;
    for (std::size_t i = 1; i < n && delay < s_.max_delay; ++i) delay *= 2;
    delay = std::min(delay, std::max(s_.max_delay, s_.base_delay));
    bool now_blocked = false;
    if (by_ip.size() >= s_.max_failures_per_ip && !blocked_until_.count(ip)) {
        blocked_until_[ip] = now + s_.block_time;
        now_blocked = true;
    }
    return {delay, now_blocked, by_ip.size(), user_count};
}

void failure_tracker::expire(time_point now)
{
    std::lock_guard lock(mutex_);
    auto const cutoff = now - s_.window;
    for (auto it = ip_failures_.begin(); it != ip_failures_.end();) {
        prune(it->second, cutoff);
        it = it->second.empty() ? ip_failures_.erase(it) : std::next(it);
    }
    for (auto it = user_failures_.begin(); it != user_failures_.end();) {
        prune(it->second, cutoff);
        it = it->second.empty() ? user_failures_.erase(it) : std::next(it);
    }
    for (auto it = blocked_until_.begin(); it != blocked_until_.end();)
        it = it->second <= now ? blocked_until_.erase(it) : std::next(it);
}

std::size_t failure_tracker::tracked() const
{
    std::lock_guard lock(mutex_);
    return ip_failures_.size() + user_failures_.size() + blocked_until_.size();
}

}  // namespace popgate::auth
