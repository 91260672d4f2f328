#pragma once
// What every session of the daemon shares: the current settings and TLS context
// (both replaced on SIGHUP), the store, the blocking pool, the relay decider and
// the authenticator, and the admission counters (sessions in all and per address,
// maildrop locks).
#include "popgate/auth/authenticator.hpp"
#include "popgate/auth/failure_tracker.hpp"
#include "popgate/config/config.hpp"
#include "popgate/daemon/write_queue.hpp"
#include "popgate/mail/maildir.hpp"
#include "popgate/session/smtp_client.hpp"
#include "popgate/net/ip.hpp"
#include "popgate/relay/decider.hpp"
#include "popgate/store/store.hpp"

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

namespace popgate::daemon {

struct listener_info {
    config::listener cfg;
    std::uint16_t bound_port = 0;
};

class context {
public:
    context(std::shared_ptr<config::settings const> s, std::unique_ptr<store::store> db, unsigned blocking_threads);
    ~context();

    std::shared_ptr<config::settings const> settings() const;
    void set_settings(std::shared_ptr<config::settings const> s);
    std::shared_ptr<boost::asio::ssl::context> tls() const;
    void set_tls(std::shared_ptr<boost::asio::ssl::context> t);

    store::store& db() noexcept { return *db_; }
    boost::asio::thread_pool& blocking() noexcept { return blocking_; }
    // Every grant, touch and audit row from sessions goes through here.
    write_queue& writes() noexcept { return writes_; }
    mail::size_cache& sizes() noexcept { return sizes_; }
    // Idle upstream connections kept for the next relayed message.
    session::upstream_pool& upstreams() noexcept { return upstreams_; }
    relay::decider& relay() noexcept { return relay_; }
    auth::authenticator& auth() noexcept { return auth_; }
    // Brute-force defence: check blocked() before authenticating, call
    // record_failure() on every failed attempt and wait the delay it returns.
    auth::failure_tracker& failures() noexcept { return failures_; }

    // Admission: false (with the reason) past limits.max_sessions,
    // limits.max_sessions_per_ip or limits.max_connections_per_minute. Every admitted session calls release().
    bool admit(net::ip_address const& peer, std::string& why);
    void release(net::ip_address const& peer);
    std::size_t active_sessions() const noexcept { return active_.load(); }

    // One POP3 session per maildrop (RFC 1939 §8: exclusive-access lock).
    bool lock_maildrop(std::string const& user);
    void unlock_maildrop(std::string const& user);

    // Whether a session on this connection counts as secure for the
    // plaintext-authentication policy.
    bool secure_for_plaintext(bool tls_active, net::ip_address const& peer) const;

private:
    mutable std::mutex mutex_;
    std::shared_ptr<config::settings const> settings_;
    std::shared_ptr<boost::asio::ssl::context> tls_;
    std::unique_ptr<store::store> db_;
    boost::asio::thread_pool blocking_;
    write_queue writes_;  // after db_: stopped (and drained) before it closes
    mail::size_cache sizes_;
    session::upstream_pool upstreams_;
    relay::decider relay_;
    auth::authenticator auth_;
    auth::failure_tracker failures_;
    std::atomic<std::size_t> active_{0};
    std::map<net::ip_address, std::size_t> per_ip_;
    std::map<net::ip_address, std::deque<std::chrono::steady_clock::time_point>> recent_;  // connection times
    std::set<std::string> maildrops_;
};

// Holds one admission slot for the life of a session (context::admit).
class admission {
public:
    admission(context& c, net::ip_address peer) : ctx_(c), peer_(peer) {}
    ~admission() { ctx_.release(peer_); }
    admission(admission const&) = delete;
    admission& operator=(admission const&) = delete;

private:
    context& ctx_;
    net::ip_address peer_;
};

}  // namespace popgate::daemon
