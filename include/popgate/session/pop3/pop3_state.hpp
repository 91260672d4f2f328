#pragma once
// The POP3 conversation as data (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS,
// RFC 5034 AUTH): the session state, what this connection offers, and
// pop3_on_line, which turns one command line into the reply and the effect
// the coroutine must run (look a user up, check a password, stream a
// message, delete in UPDATE, start TLS). No I/O here: the coroutine in
// pop3_session.cpp moves bytes and runs effects; unit tests call this directly.
#include "popgate/mail/maildir.hpp"
#include "popgate/proto/pop3.hpp"
#include "popgate/proto/sasl.hpp"
#include "popgate/session/log_line.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace popgate::session {

using pop3_phase = proto::pop3_phase;

// Whether `v` may be issued in `phase` (the command table's phases).
bool pop3_allowed(proto::pop3_verb v, pop3_phase phase) noexcept;

// What this connection offers right now (config, listener and TLS state).
struct pop3_offer {
    bool stls = false;       // STLS listener, TLS not yet active
    bool plaintext = false;  // USER/PASS, AUTH PLAIN, AUTH LOGIN allowed by auth.plaintext
    bool cram_md5 = false;   // auth.cram_md5
    bool stls_port = false;  // the listener upgrades with STLS (whether or not TLS is active now)
    bool tls_active = false;
    bool apop = false;       // the greeting carried an APOP timestamp
    // tls = "required" and TLS not active yet: only the table's pre_tls
    // commands are served, and no login method is offered.
    bool tls_required = false;
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

// The rules a session runs under, fixed for its life.
struct pop3_rules {
    std::size_t max_bad_commands = 20;
    std::size_t max_junk_commands = 100;
    std::string ip;             // for log lines
    bool log_commands = true;   // debug lines for each command (only built when they are written)
    std::size_t max_line = proto::pop3_max_line;  // limits.pop3_max_line, CRLF included
};

struct pop3_state {
    pop3_phase phase = pop3_phase::authorization;
    std::string pending_user;   // after USER, before PASS
    std::size_t bad = 0;        // protocol errors (limits.max_bad_commands)
    std::size_t junk = 0;       // commands without progress (limits.max_junk_commands)
    std::optional<pop3_maildrop> box;  // TRANSACTION
};

// What the coroutine does after a step. Every effect but `reply` and `close`
// answers the client itself once it has run.
enum class pop3_effect {
    reply,   // send `reply`
    close,   // send `reply`, then end the session with `end_reason`
    user,    // look the user up (apop-only?), then pop3_user_checked
    pass,    // check pending_user's password `cmd.args`, then log in
    apop,    // check the APOP digest of `user`
    auth,    // the SASL exchange for `mech`, `initial`
    retr,    // stream `msg` (RETR; TOP with top_lines)
    quit,    // UPDATE (RFC 1939 §6): remove the marked messages, then sign off
    stls,    // send `reply` (+OK), then the TLS handshake
};

struct pop3_step {
    pop3_effect effect = pop3_effect::reply;
    std::string reply;
    std::string end_reason;               // close
    std::vector<log_line> log;            // written before the reply
    proto::pop3_command cmd{};            // views the line
    std::string user;                     // pass, apop
    std::string digest;                   // apop
    proto::sasl_mech mech = proto::sasl_mech::plain;  // auth
    std::optional<std::string_view> initial;          // auth: initial response (views the line)
    mail::message_entry const* msg = nullptr;         // retr
    std::optional<std::uint32_t> top_lines;           // retr: TOP's line count
};

// One command line (CRLF stripped; a trailing bare LF allowed, as Dovecot).
pop3_step pop3_on_line(pop3_state& st, std::string_view line, pop3_offer const& o, pop3_rules const& r);
// A protocol error outside pop3_on_line (a SASL exchange gone wrong):
// counted like any other; past the limit the reply is the session's end.
pop3_step pop3_bad_command(pop3_state& st, pop3_rules const& r, std::string_view reply);
// A line over the limit (already skipped by the reader).
pop3_step pop3_on_too_long(pop3_state& st, pop3_rules const& r);
// USER: +OK for every name (PASS finds out whether it exists).
pop3_step pop3_user_checked(pop3_state& st, std::string name);
// Entering TRANSACTION: the +OK of a login.
std::string pop3_logged_in(pop3_state& st, std::vector<mail::message_entry> messages);
// "pass", "apop", "sasl-plain": the grant's and the log's name for a mechanism.
std::string pop3_mech_name(proto::sasl_mech m);

// Replies that more than one place sends.
namespace pop3_reply {
inline constexpr std::string_view auth_failed = "-ERR [AUTH] Authentication failed.\r\n";
inline constexpr std::string_view tls_required = "-ERR [AUTH] Must issue an STLS command first\r\n";
inline constexpr std::string_view plaintext_refused =
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
inline constexpr std::string_view auth_unavailable =
    "-ERR [SYS/TEMP] Authentication service unavailable, try again later\r\n";
}  // namespace pop3_reply

}  // namespace popgate::session
