#include "popgate/auth/failure_tracker.hpp"

#include <algorithm>

namespace popgate::auth {

namespace {

// Bounded: a flood of random names must not grow memory without end.
// Entries whose window is over are swept whenever the maps have doubled
// since the last sweep (from first_sweep on); when a sweep leaves more than
// hard_cap live entries the counters are dropped, a last resort against a
// flood from very many addresses (it forgets blocks in the making, not
// blocks). Between sweeps the maps may hold up to twice hard_cap.
constexpr std::size_t hard_cap = 1000000;

template <class Map, class Key>
std::optional<std::chrono::seconds> still_blocked(Map& m, Key const& k, failure_tracker::time_point now)
{
    auto it = m.find(k);
    if (it == m.end()) return std::nullopt;
    if (it->second <= now) {
        m.erase(it);
        return std::nullopt;
    }
    return std::chrono::ceil<std::chrono::seconds>(it->second - now);
}

}  // namespace

void failure_tracker::set_settings(throttle_settings s)
{
    std::lock_guard lock(mutex_);
    s_ = s;
}

void failure_tracker::prune(std::deque<time_point>& q, time_point cutoff)
{
    while (!q.empty() && q.front() <= cutoff) q.pop_front();
}

std::string const& failure_tracker::counted_name(std::string const& user)
{
    static std::string const invalid = "\x01invalid-name";
    bool const possible = user.size() <= 255 && std::all_of(user.begin(), user.end(), [](char ch) {
                              return ch >= '!' && ch <= '~';
                          });
    return possible ? user : invalid;
}

failure_tracker::attempt::attempt(attempt&& o) noexcept
    : owner_(std::exchange(o.owner_, nullptr)), ip_(o.ip_), user_(std::move(o.user_))
{
}

failure_tracker::attempt& failure_tracker::attempt::operator=(attempt&& o) noexcept
{
    if (this != &o) {
        if (owner_) owner_->release(*this);
        owner_ = std::exchange(o.owner_, nullptr);
        ip_ = o.ip_;
        user_ = std::move(o.user_);
    }
    return *this;
}

failure_tracker::attempt::~attempt()
{
    if (owner_) owner_->release(*this);
}

void failure_tracker::release(attempt& a) noexcept
{
    std::lock_guard lock(mutex_);
    unpend_locked(a);
}

void failure_tracker::unpend_locked(attempt& a) noexcept
{
    auto const drop = [](auto& m, auto const& k) {
        auto it = m.find(k);
        if (it != m.end() && --it->second == 0) m.erase(it);
    };
    drop(pending_ips_, a.ip_);
    drop(pending_pairs_, pair_key{a.ip_, a.user_});
    a.owner_ = nullptr;
}

std::optional<failure_tracker::block> failure_tracker::blocked(net::ip_address const& ip, std::string const& name,
                                                               time_point now, attempt* reserve)
{
    auto const& user = counted_name(name);
    std::lock_guard lock(mutex_);
    if (auto const left = still_blocked(blocked_ips_, ip, now)) return block{*left, block_scope::address};
    if (name.empty()) return std::nullopt;
    pair_key const key{ip, user};
    if (auto const left = still_blocked(blocked_pairs_, key, now)) return block{*left, block_scope::user};
    if (!reserve) return std::nullopt;
    // Failures in the window plus checks under way, against the limits:
    // the checks under way may all fail. Refused until they end, which is
    // about one failure delay away. With none under way the check goes on
    // (after a block has ended the window may still hold the failures that
    // made it: the next failure blocks again, as before).
    auto const cutoff = now - s_.window;
    auto const in_window = [&](auto& m, auto const& k) -> std::size_t {
        auto it = m.find(k);
        if (it == m.end()) return 0;
        prune(it->second, cutoff);
        return it->second.size();
    };
    auto const over = [&](auto& failures, auto const& pending, auto const& k, std::size_t limit) {
        auto it = pending.find(k);
        return it != pending.end() && in_window(failures, k) + it->second >= limit;
    };
    auto const soon = std::max(std::chrono::seconds(1), std::chrono::ceil<std::chrono::seconds>(s_.base_delay));
    if (over(ip_failures_, pending_ips_, ip, s_.max_failures_per_ip)) return block{soon, block_scope::address, true};
    if (over(pair_failures_, pending_pairs_, key, s_.max_failures_per_user))
        return block{soon, block_scope::user, true};
    if (reserve->owner_ == this) unpend_locked(*reserve);  // reused: the check it held is over
    ++pending_ips_[ip];
    ++pending_pairs_[key];
    reserve->owner_ = this;
    reserve->ip_ = ip;
    reserve->user_ = user;
    return std::nullopt;
}

failure_tracker::failure_verdict failure_tracker::record_failure(net::ip_address const& ip, std::string const& name,
                                                                 name_kind kind, time_point now)
{
    auto const& user = counted_name(name);
    std::lock_guard lock(mutex_);
    auto const cutoff = now - s_.window;
    if (counters() > sweep_at_) {
        expire_locked(now);
        if (counters() > hard_cap) {
            pair_failures_.clear();
            user_failures_.clear();
            ip_failures_.clear();
            unknown_names_at_ip_.clear();
        }
        sweep_at_ = std::max(first_sweep, 2 * counters());
    }

    auto& by_ip = ip_failures_[ip];
    prune(by_ip, cutoff);
    by_ip.push_back(now);

    // A spray is many names that do not exist; real users who each mistype
    // once (a campus NAT) are not one.
    auto& names = unknown_names_at_ip_[ip];
    std::erase_if(names, [&](auto const& e) { return e.second <= cutoff; });
    if (kind == name_kind::unknown) names[user] = now;

    auto& by_pair = pair_failures_[pair_key{ip, user}];
    prune(by_pair, cutoff);
    by_pair.push_back(now);

    std::size_t user_count = by_pair.size();
    if (!user.empty()) {
        auto& by_user = user_failures_[user];
        prune(by_user, cutoff);
        by_user.push_back(now);
        user_count = by_user.size();
    }

    // base, 2*base, 4*base ... capped, by this name's failures: a guesser's
    // rate falls fast, a user who mistyped once waits only the base delay,
    // and other names at the same address do not slow this one.
    std::size_t const n = std::max(by_pair.size(), user_count);
    auto delay = s_.base_delay;
    for (std::size_t i = 1; i < n && delay < s_.max_delay; ++i) delay *= 2;
    delay = std::min(delay, std::max(s_.max_delay, s_.base_delay));

    auto now_blocked = block_scope::none;
    bool const spray = kind == name_kind::unknown && names.size() >= s_.max_users_per_ip;
    if ((by_ip.size() >= s_.max_failures_per_ip || spray) &&
        !blocked_ips_.count(ip)) {
        blocked_ips_[ip] = now + s_.block_time;
        now_blocked = block_scope::address;
    } else if (by_pair.size() >= s_.max_failures_per_user && !blocked_pairs_.count(pair_key{ip, user}) &&
               !blocked_ips_.count(ip)) {
        blocked_pairs_[pair_key{ip, user}] = now + s_.block_time;
        now_blocked = block_scope::user;
    }
    return {delay, now_blocked, by_ip.size(), by_pair.size(), user_count, names.size()};
}

void failure_tracker::expire(time_point now)
{
    std::lock_guard lock(mutex_);
    expire_locked(now);
}

std::size_t failure_tracker::counters() const noexcept
{
    return ip_failures_.size() + pair_failures_.size() + user_failures_.size() + unknown_names_at_ip_.size();
}

void failure_tracker::expire_locked(time_point now)
{
    auto const cutoff = now - s_.window;
    auto const prune_all = [&](auto& m) {
        for (auto it = m.begin(); it != m.end();) {
            prune(it->second, cutoff);
            it = it->second.empty() ? m.erase(it) : std::next(it);
        }
    };
    prune_all(ip_failures_);
    prune_all(pair_failures_);
    prune_all(user_failures_);
    for (auto it = unknown_names_at_ip_.begin(); it != unknown_names_at_ip_.end();) {
        std::erase_if(it->second, [&](auto const& e) { return e.second <= cutoff; });
        it = it->second.empty() ? unknown_names_at_ip_.erase(it) : std::next(it);
    }
    std::erase_if(blocked_ips_, [&](auto const& e) { return e.second <= now; });
    std::erase_if(blocked_pairs_, [&](auto const& e) { return e.second <= now; });
}

std::size_t failure_tracker::tracked() const
{
    std::lock_guard lock(mutex_);
    return ip_failures_.size() + pair_failures_.size() + user_failures_.size() + unknown_names_at_ip_.size() +
           blocked_ips_.size() + blocked_pairs_.size();
}

}  // namespace popgate::auth
