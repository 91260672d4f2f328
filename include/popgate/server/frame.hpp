#pragma once
// The connection frame, written once for every protocol: accept, the peer
// address, admission, implicit TLS and the STARTTLS upgrade, the watchdog,
// errors that end one session only, and the connect / end log lines. The
// protocol (server/protocol.hpp) provides only the conversation.
#include "popgate/config/config.hpp"
#include "popgate/io/io_threads.hpp"
#include "popgate/server/admission.hpp"
#include "popgate/server/open_sessions.hpp"
#include "popgate/server/protocol.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <mutex>

namespace popgate::server {

// The settings and TLS context new connections start with; SIGHUP replaces
// both, live sessions keep the snapshot they took.
class live_config {
public:
    explicit live_config(std::shared_ptr<config::settings const> s) : settings_(std::move(s)) {}
    std::shared_ptr<config::settings const> settings() const;
    void set_settings(std::shared_ptr<config::settings const> s);
    std::shared_ptr<boost::asio::ssl::context> tls() const;
    void set_tls(std::shared_ptr<boost::asio::ssl::context> t);

private:
    mutable std::mutex mutex_;
    std::shared_ptr<config::settings const> settings_;
    std::shared_ptr<boost::asio::ssl::context> tls_;
};

struct frame_env {
    live_config& live;
    admission_control& admission;
    open_sessions& sessions;
};

// Accepts on `acc` until it is closed, each connection on the next of the
// I/O threads' contexts, where it stays.
boost::asio::awaitable<void> accept_loop(boost::asio::ip::tcp::acceptor& acc, config::listener const& l,
                                         protocol& p, frame_env env, io::io_threads& threads);

// One connection from accept to close; `peer` is the address accept gave.
boost::asio::awaitable<void> serve_connection(boost::asio::ip::tcp::socket sock, boost::asio::ip::tcp::endpoint peer,
                                              config::listener const& l, protocol& p, frame_env env);

}  // namespace popgate::server
