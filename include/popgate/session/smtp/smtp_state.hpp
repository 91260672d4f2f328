#pragma once
// The SMTP conversation as data (RFC 5321, 1870 SIZE, 2920 PIPELINING, 3207
// STARTTLS, 4954 AUTH): the session state, what this connection offers, and
// smtp_on_line, which turns one command line into the replies to queue and
// the effect the coroutine must run (the relay decision for RCPT, the
// message for DATA, the SASL exchange for AUTH, the TLS handshake). The
// command table's rules (proto::spec_for: phases, pre_tls, ends_group, junk,
// secret) are enforced in one place, in smtp_on_line. No I/O here.
#include "popgate/proto/sasl.hpp"
#include "popgate/proto/smtp.hpp"
#include "popgate/relay/upstream_verdict.hpp"
#include "popgate/relay/verdict.hpp"
#include "popgate/session/log_line.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace popgate::session {

struct smtp_recipient {
    std::string address;            // without brackets
    bool local = false;
    std::string user;               // local: the mailbox owner
    std::filesystem::path maildir;  // local: where the copy goes
};

struct smtp_state {
    proto::smtp_phase phase = proto::smtp_phase::connected;
    std::string helo;
    bool esmtp = false;
    bool authenticated = false;
    std::string auth_user;
    std::size_t bad = 0;       // limits.max_bad_commands
    std::size_t junk = 0;      // NOOP/RSET/VRFY/HELP since the last accepted recipient
    std::size_t messages = 0;  // accepted in this session

    // The transaction.
    std::string mail_from;
    std::optional<std::uint64_t> declared_size;
    bool eight_bit = false;
    std::vector<smtp_recipient> rcpts;
    std::size_t rcpt_attempts = 0;
    // A recipient of this transaction was relayed on a grant: the message is
    // counted against the grant's quota (relay/quota.hpp), once.
    bool grant_message = false;
    // Which transaction this is: reset_transaction() starts the next one, so
    // the session can tell that an upstream transaction it opened for this
    // one (at the first relayed RCPT) must be reset.
    std::uint64_t transaction = 0;

    void reset_transaction();
    // Whether this transaction has taken `address` already.
    bool has_rcpt(std::string_view address) const noexcept;
    // After STARTTLS the session starts over (RFC 3207 §4.2).
    void forget_all();
};

// What this connection offers, and the limits it runs under.
struct smtp_offer {
    std::string host;            // server.hostname
    std::string ip;              // the client, for log lines
    bool log_commands = true;    // debug lines for each command (only built when they are written)
    bool starttls_port = false;  // the listener upgrades with STARTTLS
    bool tls_active = false;
    bool can_start_tls = false;  // a certificate is loaded and TLS not active yet
    // tls = "required": commands the table does not mark pre_tls are refused
    // with 530 until STARTTLS, and AUTH is not advertised before it.
    bool tls_required = false;
    // auth_required without local_delivery_without_auth (RFC 6409 §4.3): a
    // transaction needs AUTH first; MAIL answers 530 5.7.0 before it.
    bool mail_needs_auth = false;
    bool plaintext = false;      // auth.plaintext allows PLAIN and LOGIN here
    bool plaintext_with_tls = false;  // ... and would after STARTTLS
    bool cram_md5 = false;
    std::size_t max_line = proto::smtp_max_command_line;  // limits.smtp_max_line, at least RFC 5321's
    std::size_t max_message_size = 0;
    std::size_t max_recipients = 0;
    std::size_t max_bad_commands = 0;
    std::size_t max_junk_commands = 0;
};

enum class smtp_effect {
    reply,     // queue `reply`
    close,     // queue `reply`, write everything, end with `end_reason`
    rcpt,      // run the relay decision for `rcpt`, then smtp_rcpt_decided
    data,      // receive and deliver the message
    auth,      // authenticate with `cmd.args` (smtp_auth_start first)
    starttls,  // queue `reply` (220), write it, then the TLS handshake
};

struct smtp_step {
    smtp_effect effect = smtp_effect::reply;
    std::string reply;
    std::string end_reason;
    std::vector<log_line> log;  // written before the reply is queued
    proto::smtp_command cmd{};  // views the line
    std::optional<proto::mail_args> rcpt;
    bool ends_group = false;    // RFC 2920 §3.1: write the replies now
};

smtp_step smtp_on_line(smtp_state& st, std::string_view line, smtp_offer const& o);
// A line over the limit (already skipped by the reader).
smtp_step smtp_on_too_long(smtp_state& st, smtp_offer const& o);
// A protocol error outside smtp_on_line: `reply` queued and counted; past
// limits.max_bad_commands the 421 follows and the session ends.
smtp_step smtp_bad_command(smtp_state& st, smtp_offer const& o, std::string reply);
// Whether RCPT `address`, with relay decision `v`, goes to the upstream MTA
// before it is answered (when one is configured): a relayed recipient not
// already taken in this transaction (the upstream hears each one once).
bool smtp_asks_upstream(smtp_state const& st, std::string_view address, relay::verdict const& v);
// RCPT once the relay decision is in, and for a recipient that went to the
// upstream, the upstream's verdict on it: its refusal is this RCPT's reply
// (the recipient is not taken), its acceptance our 250.
smtp_step smtp_rcpt_decided(smtp_state& st, proto::mail_args const& rcpt, relay::verdict const& v,
                            smtp_offer const& o, relay::upstream_verdict const* upstream = nullptr);

// The upstream's verdict as log fields, the same on the RCPT line and on the
// data-phase lines: upstream_reply=, upstream_status=, result=, tls= (when
// known) and what the upstream said, quoted, in upstream_detail=.
std::string upstream_fields(relay::upstream_verdict const& v, std::string_view result);

// AUTH's argument: the mechanism and initial response, or the refusal.
struct smtp_auth_request {
    std::optional<proto::sasl_mech> mech;  // unset: `refusal` says why
    std::optional<std::string_view> initial;
    std::string refusal;
};
smtp_auth_request smtp_auth_start(std::string_view args, smtp_offer const& o);

// The EHLO keywords and the HELP text of this connection.
std::vector<std::string> smtp_auth_mechs(smtp_offer const& o);
// "250 2.0.0 Ok"-style lines: reply(code, enhanced, text) from proto.
std::string smtp_greeting(smtp_offer const& o);

}  // namespace popgate::session
