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

    asio::awaitable<void> run() override;
    std::string last_words() const override;
    std::string end_fields() const override;

private:
    // Each effect queues its replies; false: the session ends (after what
    // is queued was written, where the peer is still there).
    asio::awaitable<bool> run_step(smtp_step& step);
    asio::awaitable<bool> do_rcpt(proto::mail_args const& rcpt);
    asio::awaitable<bool> do_auth(std::string_view args);
    asio::awaitable<bool> finish_auth(proto::sasl_step const& step, proto::sasl_mech mech,
                                      std::string const& challenge);
    asio::awaitable<bool> do_data();
    asio::awaitable<bool> do_starttls();
    asio::awaitable<bool> close_with(smtp_step& step);

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
};

}  // namespace popgate::session
