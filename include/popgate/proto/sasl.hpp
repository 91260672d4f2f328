#pragma once
// One SASL layer for POP3 AUTH (RFC 5034) and SMTP AUTH (RFC 4954). Pure: the
// server side of each mechanism is a small state machine that turns client
// responses into either a challenge or a request to check credentials; the
// session does the I/O and asks the authenticator. A new mechanism (SCRAM) is a
// new state in sasl_server, with no change to either protocol.
#include "popgate/proto/errc.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace popgate::proto {

enum class sasl_mech { plain, login, cram_md5 };

std::optional<sasl_mech> parse_sasl_mech(std::string_view name) noexcept;  // case-insensitive
std::string_view sasl_mech_name(sasl_mech m) noexcept;                     // "PLAIN", "LOGIN", "CRAM-MD5"
// Sends the secret in a form the server can replay (PLAIN, LOGIN): governed by
// the auth.plaintext policy.
constexpr bool sasl_is_plaintext(sasl_mech m) noexcept { return m != sasl_mech::cram_md5; }

// RFC 4648 base64 with padding; whitespace, missing padding or stray characters
// are errors (errc::bad_base64).
result<std::string> base64_decode(std::string_view in);
std::string base64_encode(std::string_view in);

struct sasl_step {
    enum class kind { challenge, check_password, check_cram, failed, cancelled } what = kind::failed;
    std::string challenge;  // raw bytes; the session base64-encodes them
    std::string authcid;
    std::string password;   // PLAIN / LOGIN
    std::string digest;     // CRAM-MD5: lowercase hex HMAC
    std::optional<errc> error;
};

class sasl_server {
public:
    // `cram_challenge` must be unique per attempt (RFC 2195: "<pid.time@host>").
    sasl_server(sasl_mech m, std::string cram_challenge = {});

    // The initial response (base64, "=" meaning empty) if the client sent one
    // with the command.
    sasl_step start(std::optional<std::string_view> initial_response_b64);
    // The next client line: base64, or "*" to cancel.
    sasl_step next(std::string_view client_line_b64);

    static constexpr std::size_t max_response = 4096;  // decoded octets; more is refused

private:
    sasl_step on_response(std::string const& decoded);
    sasl_step fail(errc e);

    sasl_mech mech_;
    std::string cram_challenge_;
    int stage_ = 0;
    std::string login_user_;
};

// RFC 4616 §2: message = [authzid] NUL authcid NUL passwd. An authzid is
// accepted only when empty or equal to authcid (no proxy authorization).
struct plain_credentials {
    std::string authcid;
    std::string password;
};
result<plain_credentials> parse_plain(std::string_view decoded);

}  // namespace popgate::proto
