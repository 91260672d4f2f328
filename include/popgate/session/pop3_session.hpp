#pragma once
// The pure parts of the POP3 session (RFC 1939, RFC 2449, RFC 5034): which
// commands each state accepts, what CAPA offers on this connection, and the
// maildrop as the TRANSACTION state sees it (numbers, sizes, UIDs, deletion
// marks). No I/O here: the coroutine in pop3_session.cpp owns sockets, TLS,
// timeouts, the store and the filesystem, and unit tests call this directly.
#include "popgate/mail/maildir.hpp"
#include "popgate/proto/pop3.hpp"
#include "popgate/proto/sasl.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace popgate::session {

// RFC 1939 §3: UPDATE is entered only by QUIT and is not a place the command
// loop waits in, so it has no value here.
enum class pop3_phase { authorization, transaction };

// Whether `v` may be issued in `phase` (RFC 1939 §4-§7; CAPA anywhere, RFC 2449;
// STLS and AUTH only before login, RFC 2595 §4 and RFC 5034 §4).
bool pop3_allowed(proto::pop3_verb v, pop3_phase phase) noexcept;

// What this connection offers right now (config, listener and TLS state).
struct pop3_offer {
    bool stls = false;       // STLS listener, TLS not yet active
    bool plaintext = false;  // USER/PASS, AUTH PLAIN, AUTH LOGIN allowed by auth.plaintext
    bool cram_md5 = false;   // auth.cram_md5
};

// SASL mechanisms to advertise and accept, in preference order of the list.
std::vector<proto::sasl_mech> pop3_sasl_mechs(pop3_offer const& o);

// The whole multi-line CAPA response (RFC 2449 §5). USER, STLS and SASL are
// listed only in AUTHORIZATION, and only where they would be accepted.
std::string pop3_capa(pop3_offer const& o, pop3_phase phase);

// "+OK ...\r\nMECH\r\n...\r\n.\r\n": the answer to AUTH without a mechanism.
std::string pop3_auth_list(pop3_offer const& o);

// The maildrop of one session: the messages found at login, numbered from 1,
// with their deletion marks. Messages that arrive later are not shown until
// the next session (RFC 1939 §8).
class pop3_maildrop {
public:
    explicit pop3_maildrop(std::vector<mail::message_entry> messages);

    std::size_t live_count() const noexcept;      // not marked deleted
    std::uint64_t live_octets() const noexcept;

    std::string stat() const;                     // "+OK n m"
    std::string list(std::string_view args) const;   // single line or multi-line
    std::string uidl(std::string_view args) const;
    std::string dele(std::string_view args);
    std::string rset();                           // unmarks every message

    // A message for RETR/TOP, or the -ERR reply to send instead.
    struct lookup {
        mail::message_entry const* msg = nullptr;
        std::string error;
    };
    lookup find(std::string_view number) const;
    lookup find(std::uint32_t number) const;

    // The messages QUIT removes in UPDATE.
    std::vector<mail::message_entry> marked() const;
    std::size_t size() const noexcept { return messages_.size(); }

private:
    std::vector<mail::message_entry> messages_;
    std::vector<bool> deleted_;
};

}  // namespace popgate::session
