#pragma once
// The Postfix SMTPD policy delegation protocol for the connection frame:
// registered as "policy". An MTA (Postfix's check_policy_service, Exim's
// ${readsocket}) asks, per recipient, whether a client may relay; the answer
// is relay::policy's, the decision popgate's own RCPT makes, asked as
// relay::asker::mta (see relay/verdict.hpp). The request parser and the
// answers are proto/smtpd_policy.hpp.
#include "popgate/relay/policy.hpp"

#include <boost/asio/thread_pool.hpp>
#include "popgate/server/protocol.hpp"

namespace popgate::session {

// The one service a policy session uses.
struct policy_services {
    relay::policy& relay;              // the relay decision
    boost::asio::thread_pool& blocking;  // where it runs when it is not in_place()
};

class policy_protocol final : public server::protocol {
public:
    explicit policy_protocol(policy_services s) : s_(s) {}
    std::string_view name() const noexcept override { return "policy"; }
    // No TLS: Postfix and Exim speak the policy protocol in clear.
    std::string_view alpn() const noexcept override { return ""; }
    // Its clients are MTAs: a connection per Postfix smtpd process, all
    // from one address. Only limits.max_service_sessions applies to those in
    // the listener's trusted_networks; anyone else is a stranger, closed
    // unanswered, and counted as a mail client is: strangers cannot take
    // the MTA's places.
    server::address_limits limits_for(net::ip_address const& peer, config::listener const& l) const noexcept override
    {
        return l.serves(peer) ? server::address_limits::exempt : server::address_limits::apply;
    }
    std::string refusal(std::string_view why, config::settings const& s) const override;
    std::unique_ptr<server::session> open(server::connection& c) override;

private:
    policy_services s_;
};

}  // namespace popgate::session
