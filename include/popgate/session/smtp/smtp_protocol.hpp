#pragma once
// The SMTP protocol for the connection frame: registered as "smtp". The
// relay decision at each RCPT is relay::policy's; accepted mail goes into
// local Maildirs and, synchronously, to the upstream MTA (DESIGN decision
// 7): the client's end of DATA is answered with the upstream's verdict.
#include "popgate/auth/authenticator.hpp"
#include "popgate/relay/policy.hpp"
#include "popgate/relay/smtp_client.hpp"
#include "popgate/server/protocol.hpp"
#include "popgate/session/auth_flow.hpp"

#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <cstdint>

namespace popgate::session {

// The few services an SMTP session uses, owned by the layers below.
struct smtp_services {
    boost::asio::thread_pool& blocking;  // crypt(3), Maildir writes and fsync
    auth::authenticator& auth;
    auth_guard guard;                    // brute-force accounting
    relay::policy& relay;                // the relay decision
    relay::upstream_pool& upstreams;     // kept upstream connections
    std::atomic<std::uint64_t>& data_in_flight;  // octets of messages being received (limits.max_data_in_flight)
};

class smtp_protocol final : public server::protocol {
public:
    explicit smtp_protocol(smtp_services s) : s_(s) {}
    std::string_view name() const noexcept override { return "smtp"; }
    // The ids Exim accepts on its SMTP ports.
    std::string_view alpn() const noexcept override { return "\x04smtp\x05" "esmtp"; }
    std::string refusal(std::string_view why, config::settings const& s) const override;
    std::unique_ptr<server::session> open(server::connection& c) override;

private:
    smtp_services s_;
};

}  // namespace popgate::session
