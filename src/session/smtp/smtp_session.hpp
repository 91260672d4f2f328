#pragma once
// The SMTP session object (private to src/session/smtp): the coroutine side
// of smtp_state.hpp. smtp_session.cpp has the command loop, RCPT, AUTH and
// STARTTLS; smtp_data.cpp the message (DATA).
#include "popgate/session/smtp/smtp_protocol.hpp"
#include "popgate/session/smtp/smtp_state.hpp"

namespace popgate::session {

class smtp_session final : public server::session {
public:
    smtp_session(smtp_services& svc, server::connection& c);

    // The conversation.
    asio::awaitable<void> run() override;
    // Once the client has its EOF, the upstream transaction the conversation
    // left open (QUIT or a client gone after RCPT) is reset, so that its
    // connection serves the next message instead of being dropped.
    asio::awaitable<void> after_close() override;
    std::string last_words() const override;
    std::string end_fields() const override;

private:
    // Each effect queues its replies; false: the session ends (after what
    // is queued was written, where the peer is still there).
    asio::awaitable<bool> run_step(smtp_step& step);
    asio::awaitable<bool> do_rcpt(proto::mail_args const& rcpt);
    // The upstream's verdict on one relayed recipient, the upstream
    // transaction opened first when this is the transaction's first.
    asio::awaitable<relay::upstream_verdict> upstream_rcpt(std::string const& address);
    // The client's transaction ended without a message: reset the upstream one.
    asio::awaitable<void> end_upstream();
    asio::awaitable<bool> do_auth(std::string_view args);
    asio::awaitable<bool> finish_auth(proto::sasl_step const& step, proto::sasl_mech mech,
                                      std::string const& challenge);
    asio::awaitable<bool> do_data();
    asio::awaitable<bool> do_starttls();
    asio::awaitable<bool> close_with(smtp_step& step);
    asio::awaitable<void> converse();

    // What this connection offers: fixed until STARTTLS changes it.
    smtp_offer make_offer() const;
    std::string const& host() const { return s_.hostname; }

    smtp_services& svc_;
    server::connection& c_;
    config::settings const& s_;  // c_.settings, for the whole session
    channel ch_;
    smtp_state st_;
    smtp_offer offer_;
    bool waiting_for_command_ = false;  // the watchdog may say 421 only then
    auth::failure_tracker::attempt attempt_;  // the credential check under way, until its verdict
    // The upstream transaction of client transaction up_txn_ (smtp_state::
    // transaction), open from its first relayed RCPT to its DATA. Destroyed
    // with the session: a client that drops or quits closes the connection,
    // and the upstream discards what it never got DATA for.
    std::unique_ptr<relay::smtp_client> up_;
    std::uint64_t up_txn_ = 0;
};

}  // namespace popgate::session
