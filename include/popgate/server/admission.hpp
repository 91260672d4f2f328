#pragma once
// Admission of new connections: limits.max_sessions in all,
// limits.max_sessions_per_ip and limits.max_connections_per_minute per
// client address. Thread-safe; the frame holds one slot per session.
#include "popgate/config/config.hpp"
#include "popgate/net/ip.hpp"

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace popgate::server {

// Times of one kind of event per client address within a sliding window
// (connections in a minute, slow sessions in ten). Addresses whose window
// is over are forgotten in a sweep each time the map has doubled since the
// last one (from 100,000 addresses on): memory stays within twice the
// addresses seen in one window, and a sweep costs each event O(1) on
// average, not a walk of the whole map. Not thread-safe.
class address_window {
public:
    using time_point = std::chrono::steady_clock::time_point;
    explicit address_window(std::chrono::steady_clock::duration window) : window_(window) {}
    // Records an event now; returns the address's count in the window.
    std::size_t add(net::ip_address const& peer, time_point now);
    // The address's count in the window.
    std::size_t count(net::ip_address const& peer, time_point now);
    // Addresses held (some perhaps idle until the next sweep).
    std::size_t tracked() const noexcept { return times_.size(); }

    static constexpr std::size_t first_sweep = 100000;

private:
    std::chrono::steady_clock::duration window_;
    std::map<net::ip_address, std::deque<time_point>> times_;
    std::size_t sweep_at_ = first_sweep;
};

// Which limits a listener's connections meet. Mail clients meet all of
// them. The clients of a service protocol (policy: a connection per Postfix
// smtpd process, all from the MTA's address; HTTP: Dovecot's reports,
// Prometheus, health checks) neither count against nor are refused for
// their address, and each service protocol has a budget of its own,
// limits.max_service_sessions: a daemon full of mail clients still answers
// its health check and its MTA's policy lookups, they take no place from
// mail clients, and a local process holding every HTTP place leaves the
// MTA's policy lookups theirs.
//
// A balancer's own connection (a trusted proxy's PROXY header that names
// no client or the proxy itself: HAProxy's health checks, a frontend on a
// Unix socket, a client on the balancer's host) is
// counted by the balancer's address in limits.max_sessions and
// limits.max_sessions_per_ip, but not in the windows of
// limits.max_connections_per_minute and limits.max_slow_sessions_per_ip:
// those judge one client's behaviour, and the balancer's checks every
// second on each listener are not a client's flood.
enum class address_limits { apply, balancer, exempt };

// Why admit() turned a connection away: the limit's key in [limits] (the
// reason of popgate_connections_refused_total) and the words for the log
// and the client.
struct refusal {
    std::string_view limit;
    std::string why;
};

class admission_control {
public:
    // false (with the limit and the reason for the log) past a limit. Every admitted
    // connection calls release() once, with the same `l` and `service`:
    // the protocol whose budget an exempt connection takes.
    bool admit(net::ip_address const& peer, config::settings const& s, refusal& why,
               address_limits l = address_limits::apply, std::string_view service = {});
    void release(net::ip_address const& peer, address_limits l = address_limits::apply,
                 std::string_view service = {});
    // A session of `peer` was cut by limits.command_timeout: it counts
    // against the address (limits.max_slow_sessions_per_ip in 10 minutes).
    // Returns the address's count in the window.
    std::size_t note_slow(net::ip_address const& peer);
    std::size_t active() const noexcept { return active_.load(); }  // mail clients'

private:
    std::mutex mutex_;
    std::atomic<std::size_t> active_{0};
    std::map<std::string, std::size_t, std::less<>> service_active_;  // by protocol; under mutex_
    std::map<net::ip_address, std::size_t> per_ip_;
    address_window recent_{std::chrono::minutes(1)};  // connections
    address_window slow_{std::chrono::minutes(10)};   // sessions ended by limits.command_timeout
};

// Holds one admission slot for the life of a session.
class admission_slot {
public:
    admission_slot(admission_control& a, net::ip_address peer, address_limits l = address_limits::apply,
                   std::string_view service = {})
        : a_(a), peer_(peer), limits_(l), service_(service)
    {
    }
    ~admission_slot() { a_.release(peer_, limits_, service_); }
    admission_slot(admission_slot const&) = delete;
    admission_slot& operator=(admission_slot const&) = delete;

private:
    admission_control& a_;
    net::ip_address peer_;
    address_limits limits_;
    std::string_view service_;  // a protocol's name: lives as long as the daemon
};

}  // namespace popgate::server
