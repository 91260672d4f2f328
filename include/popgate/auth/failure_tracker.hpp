#pragma once
// Brute-force defence shared by POP3 and SMTP: failed authentications counted
// per client address and per user name in a sliding window. Each failure is
// answered after a delay that grows with the larger of the two counts; past a
// threshold an ADDRESS is refused for a cool-down. A user name is never locked:
// a flood against "alice" from one address slows that address and blocks it,
// but alice logging in from an address that has not failed is not affected.
// Successful logins are never delayed. Pure apart from a mutex; time is passed in.
#include "popgate/net/ip.hpp"

#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace popgate::auth {

struct throttle_settings {
    std::chrono::seconds window{900};
    std::size_t max_failures_per_ip = 10;  // then the address is refused for block_time
    std::chrono::seconds block_time{900};
    std::chrono::milliseconds base_delay{2000};
    std::chrono::milliseconds max_delay{15000};
};

class failure_tracker {
public:
    using time_point = std::chrono::steady_clock::time_point;

    explicit failure_tracker(throttle_settings s = {}) : s_(s) {}
    void set_settings(throttle_settings s);

    // How long the address is still refused, if it is.
    std::optional<std::chrono::seconds> blocked(net::ip_address const& ip, time_point now);

    struct failure_verdict {
        std::chrono::milliseconds delay;
        bool now_blocked;       // this failure crossed the threshold (log it once)
        std::size_t ip_count;
        std::size_t user_count;
    };
    failure_verdict record_failure(net::ip_address const& ip, std::string const& user, time_point now);

    // Entries older than the window (and ended blocks) are forgotten.
    void expire(time_point now);
    std::size_t tracked() const;

private:
    static void prune(std::deque<time_point>& q, time_point cutoff);

    throttle_settings s_;
    mutable std::mutex mutex_;
    std::map<net::ip_address, std::deque<time_point>> ip_failures_;
    std::unordered_map<std::string, std::deque<time_point>> user_failures_;
    std::map<net::ip_address, time_point> blocked_until_;
};

}  // namespace popgate::auth
