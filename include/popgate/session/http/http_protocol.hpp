#pragma once
// The HTTP protocol for the connection frame: registered as "http". HTTP/1.1
// (and 1.0) with keep-alive, parsed by Boost.Beast over the frame's
// io::stream, so the frame's admission, TLS and watchdog apply as to POP3
// and SMTP. Only peers in the listener's trusted_networks are served (403
// otherwise). What it serves is a table of routes (http_route.hpp).
#include "popgate/server/protocol.hpp"
#include "popgate/session/http/http_route.hpp"

#include <span>

namespace popgate::session {

struct http_services {
    std::span<http_route* const> routes;  // owned by the daemon's context
};

class http_protocol final : public server::protocol {
public:
    explicit http_protocol(http_services s) : s_(s) {}
    std::string_view name() const noexcept override { return "http"; }
    std::string_view alpn() const noexcept override { return "\x08http/1.1\x08http/1.0"; }
    // Its clients in trusted_networks are services (Dovecot's reports,
    // Prometheus, a supervisor's health check); anyone else, answered 403,
    // meets a mail client's limits, so that it cannot hold the services'
    // places.
    server::address_limits limits_for(net::ip_address const& peer, config::listener const& l) const noexcept override;
    std::string refusal(std::string_view why, config::settings const& s) const override;
    std::unique_ptr<server::session> open(server::connection& c) override;

private:
    http_services s_;
};

}  // namespace popgate::session
