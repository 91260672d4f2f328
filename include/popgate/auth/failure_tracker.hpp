#pragma once
// Brute-force defence shared by POP3 and SMTP, written for addresses that many
// users share (an office NAT, a university, a CGNAT). Failed authentications
// are counted in a sliding window per (address, user name), per address, per
// user name, and as the number of different names failing at an address.
// - A user name at an address is refused for block_time after
//   max_failures_per_user failures there: the phone with an old password
//   locks out its own user at that address, nobody else.
// - A whole address is refused only at a much higher ceiling
//   (max_failures_per_ip), or when max_users_per_ip different names that do
//   not exist fail there (a spray of guessed names). Real users mistyping
//   behind one campus NAT count toward the ceiling and their own
//   (address, name) block, never toward the spray limit.
//   The caller says which kind of name failed; the reply and its timing must
//   not depend on it (they do not here: the delay counts failures only).
// - Each failure is answered after a delay that grows with that name's
//   failures (at this address and everywhere); another user's failures at the
//   same address never slow or refuse a user below the address ceiling.
// Successful logins are never delayed. Pure apart from a mutex; time is passed in.
#include "popgate/net/ip.hpp"

#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

namespace popgate::auth {

struct throttle_settings {
    std::chrono::seconds window{900};
    std::size_t max_failures_per_user = 5;  // one name at one address, then that name is refused there
    std::size_t max_failures_per_ip = 100;  // all names at one address, then the address is refused
    std::size_t max_users_per_ip = 10;      // different unknown names failing at one address, then it is refused
    std::chrono::seconds block_time{900};
    std::chrono::milliseconds base_delay{2000};
    std::chrono::milliseconds max_delay{15000};
};

enum class block_scope { none, user, address };

// Whether the failed name is a user of this site. Only unknown names count
// toward the spray limit (max_users_per_ip). A failure whose name was never
// looked up (a malformed exchange) is unknown: nothing vouches for it.
enum class name_kind { unknown, known };

class failure_tracker {
public:
    using time_point = std::chrono::steady_clock::time_point;

    explicit failure_tracker(throttle_settings s = {}) : s_(s) {}
    void set_settings(throttle_settings s);

    struct block {
        std::chrono::seconds left;
        block_scope scope;  // user: this name at this address; address: every name there
        // Not a block: checks under way would reach a limit if they all
        // failed. Ask again once they end (milliseconds: their crypt).
        bool busy = false;
    };

    // A password check under way, from the check of blocked() that admitted
    // it until its verdict: it counts toward the limits as a failure would,
    // so that sessions checking one name in parallel cannot all pass the
    // check before the first failure is recorded (twenty sessions would get
    // twenty guesses, not max_failures_per_user). Released when destroyed or
    // reassigned; record the failure first.
    class attempt {
    public:
        attempt() = default;
        attempt(attempt&& o) noexcept;
        attempt& operator=(attempt&& o) noexcept;
        attempt(attempt const&) = delete;
        attempt& operator=(attempt const&) = delete;
        ~attempt();

    private:
        friend class failure_tracker;
        failure_tracker* owner_ = nullptr;
        net::ip_address ip_{};
        std::string user_;
    };

    // Whether an attempt from `ip` (as `user`, when the name is known yet) is
    // refused, and for how long. With `reserve` and a name, an attempt that
    // is not refused is held in it as under way; checks under way count as
    // failures, so one beyond the limits gets a `busy` answer until they end.
    std::optional<block> blocked(net::ip_address const& ip, std::string const& user, time_point now,
                                 attempt* reserve = nullptr);

    struct failure_verdict {
        std::chrono::milliseconds delay;
        block_scope now_blocked;  // what this failure blocked (log it once); none: nothing new
        std::size_t ip_count;     // failures at this address in the window
        std::size_t pair_count;   // ... of this name at this address
        std::size_t user_count;   // ... of this name anywhere
        std::size_t names;        // different unknown names failing at this address
    };
    failure_verdict record_failure(net::ip_address const& ip, std::string const& user, name_kind kind,
                                   time_point now);

    // Entries older than the window (and ended blocks) are forgotten.
    void expire(time_point now);
    std::size_t tracked() const;

    // The key a name is counted under: a name no user can have (over 255
    // octets, or outside printable ASCII, as the users table's CHECK says)
    // is counted under one key of its own, so that long invented names
    // cannot grow memory, and all of them at an address share one count.
    static std::string const& counted_name(std::string const& user);

private:
    using pair_key = std::pair<net::ip_address, std::string>;
    void release(attempt& a) noexcept;
    void unpend_locked(attempt& a) noexcept;
    static void prune(std::deque<time_point>& q, time_point cutoff);
    void expire_locked(time_point now);
    std::size_t counters() const noexcept;  // entries of the failure maps

    throttle_settings s_;
    mutable std::mutex mutex_;
    std::map<net::ip_address, std::deque<time_point>> ip_failures_;
    std::map<pair_key, std::deque<time_point>> pair_failures_;
    std::unordered_map<std::string, std::deque<time_point>> user_failures_;
    // Unknown names only: name -> its last failure.
    std::map<net::ip_address, std::map<std::string, time_point>> unknown_names_at_ip_;
    std::map<net::ip_address, time_point> blocked_ips_;
    std::map<pair_key, time_point> blocked_pairs_;
    // Checks under way (attempt), per address and per name at an address.
    std::map<net::ip_address, std::size_t> pending_ips_;
    std::map<pair_key, std::size_t> pending_pairs_;
    // Entries whose window is over are swept when counters() passes this
    // (first_sweep, then twice what the last sweep left).
    static constexpr std::size_t first_sweep = 100000;
    std::size_t sweep_at_ = first_sweep;
};

}  // namespace popgate::auth
