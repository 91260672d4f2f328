#pragma once
// The POP3 protocol for the connection frame: registered as "pop3". A
// successful login locks the maildrop, opens it, commits the relay grant and
// only then answers +OK (DESIGN decision 4). Deletions happen only when QUIT
// is received in TRANSACTION; a timeout or a dropped connection deletes nothing.
#include "popgate/auth/authenticator.hpp"
#include "popgate/mail/maildir.hpp"
#include "popgate/relay/grant_issuer.hpp"
#include "popgate/server/protocol.hpp"
#include "popgate/session/auth_flow.hpp"
#include "popgate/store/write_queue.hpp"

#include <boost/asio/thread_pool.hpp>

namespace popgate::session {

// The few services a POP3 session uses, owned by the layers below.
struct pop3_services {
    boost::asio::thread_pool& blocking;  // crypt(3), maildrop scans, deletions
    auth::authenticator& auth;
    auth_guard guard;                    // brute-force accounting
    store::write_queue& writes;          // the grant, committed before +OK
    mail::size_cache& sizes;
    relay::grant_issuer& grants;         // whether and what a login grants
};

class pop3_protocol final : public server::protocol {
public:
    explicit pop3_protocol(pop3_services s) : s_(s) {}
    std::string_view name() const noexcept override { return "pop3"; }
    // Registered with IANA (RFC 2595).
    std::string_view alpn() const noexcept override { return "\x04pop3"; }
    std::string refusal(std::string_view why, config::settings const& s) const override;
    std::unique_ptr<server::session> open(server::connection& c) override;

private:
    pop3_services s_;
};

}  // namespace popgate::session
