#pragma once
// The receiving side of Dovecot's authentication policy protocol (Dovecot
// 2.3, auth-policy.c): Dovecot's auth process POSTs a JSON object to
// auth_policy_server_url with "?command=allow" before (and after) checking a
// password, and "?command=report" once the login is decided, with
// "success": true or false. The object's other fields are what
// auth_policy_request_attributes names; popgate reads "login", "remote"
// (the client's address) and "protocol" (the service: pop3, imap, ...),
// and "tls". Anything else (pwhash, a password an administrator put in
// the attributes) is ignored and never logged.
//
// A successful report of a POP3 or IMAP login grants "remote" as popgate's
// own POP3 login does (session/login_grant.hpp), method dovecot-pop3 or
// dovecot-imap. "allow" is always answered {"status":0} (continue): popgate
// never holds up a login at Dovecot. A listener without api_key_file serves
// no reports (403, nothing granted): a report names the address to grant,
// so without the shared secret any local user could grant any address.
#include "popgate/relay/grant_issuer.hpp"
#include "popgate/session/http/http_route.hpp"
#include "popgate/store/write_queue.hpp"

#include <boost/asio/thread_pool.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace popgate::session {

struct dovecot_policy_request {
    std::string login;
    std::string remote;
    std::string protocol;
    std::optional<bool> success;  // only in reports
    // A policy server refused the login whatever its password: Dovecot then
    // fails the login, and a report says success with policy_reject.
    bool policy_reject = false;
    bool tls = false;
    // The passdb's fields and the SASL mechanism, as the shipped attributes
    // send them: "nologin=%{passdb:nologin:no}" reads "" when the passdb set
    // the field and "no" when it did not (Dovecot keeps such fields as bare
    // flags). Unset: the template does not name them.
    std::optional<std::string> nologin, proxy, proxy_maybe, mech;
};

// Why a report of success proves no login that may grant, or "" when it
// does. Dovecot reports success as soon as its passdb says OK, before its
// login process applies the passdb's nologin (a disabled account) or proxy
// (the password is checked by the backend, or by nobody with nopassword),
// and for the ANONYMOUS mechanism. A report whose template lacks these
// fields cannot tell, so it grants nothing either.
std::string_view dovecot_report_refusal(dovecot_policy_request const& r) noexcept;

// Pure: the fields popgate uses, or nullopt with `why` (one short line) for
// a body that is not a JSON object, or lacks or mistypes login, remote or
// protocol, or has a login that is empty, over 255 octets or has control
// characters.
std::optional<dovecot_policy_request> parse_dovecot_policy(std::string_view body, std::string& why);

// relay_grants.method for a login over `protocol` at Dovecot, or "" when such
// a login grants nothing (anything but pop3 and imap).
std::string_view dovecot_grant_method(std::string_view protocol) noexcept;

class dovecot_policy_route final : public http_route {
public:
    dovecot_policy_route(boost::asio::thread_pool& blocking, store::write_queue& writes,
                         relay::grant_issuer const& issuer)
        : blocking_(blocking), writes_(writes), issuer_(issuer)
    {
    }
    std::string_view path() const noexcept override { return "/dovecot/auth-policy"; }
    std::span<beast_http::verb const> methods() const noexcept override;
    boost::asio::awaitable<http_reply> serve(http_exchange& x) override;
    // A report from a Dovecot outside trusted_networks is refused like one
    // with a wrong key: counted, so that PopgateDovecotReportsRefused fires.
    void refused_untrusted(std::string_view query) const noexcept override;

private:
    boost::asio::awaitable<http_reply> report(http_exchange& x);
    boost::asio::thread_pool& blocking_;
    store::write_queue& writes_;
    relay::grant_issuer const& issuer_;
};

}  // namespace popgate::session
