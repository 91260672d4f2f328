#pragma once
// The POP3 session object (private to src/session/pop3): the coroutine side of
// pop3_state.hpp. pop3_session.cpp has the command loop and the mailbox
// effects, pop3_login.cpp the login effects.
#include "popgate/session/pop3/pop3_protocol.hpp"
#include "popgate/session/pop3/pop3_state.hpp"

#include <optional>
#include <string>

namespace popgate::session {

class pop3_session final : public server::session {
public:
    pop3_session(pop3_services& svc, server::connection& c);

    asio::awaitable<void> run() override;
    std::string last_words() const override;
    std::string end_fields() const override;

private:
    // The login effects (pop3_login.cpp). Each answers the client; false:
    // the session must end.
    asio::awaitable<bool> do_user(std::string name);
    asio::awaitable<bool> do_pass(std::string const& user, std::string const& password);
    asio::awaitable<bool> password_login(std::string const& user, std::string const& password, std::string_view mech);
    asio::awaitable<bool> do_apop(std::string const& user, std::string const& digest);
    asio::awaitable<bool> do_auth(proto::sasl_mech mech, std::optional<std::string_view> initial);
    asio::awaitable<bool> refuse_if_blocked(bool& refused, std::string const& user, std::string_view mech);
    struct opened_maildrop;
    asio::awaitable<bool> finish_auth(auth::result const& r, std::string_view mech, std::string const& attempted,
                                      std::optional<opened_maildrop> opened);
    asio::awaitable<bool> complete_login(auth::result const& r, std::string_view mech,
                                         std::optional<opened_maildrop> opened);
    asio::awaitable<bool> record_login(auth::result const& r, std::string_view mech, bool tls,
                                       relay::grant_plan& plan);
    opened_maildrop open_maildrop(std::string const& user);

    // The mailbox effects (pop3_session.cpp).
    asio::awaitable<bool> send_message(mail::message_entry const& m, std::optional<std::uint32_t> top);
    asio::awaitable<bool> do_quit();
    asio::awaitable<bool> run_step(pop3_step& step);

    pop3_offer offer() const;

    pop3_services& svc_;
    server::connection& c_;
    config::settings const& s_;  // c_.settings, for the whole session
    channel ch_;
    pop3_rules rules_;
    pop3_state st_;
    std::string timestamp_;  // APOP (RFC 1939 §7); empty when auth.apop is off
    std::string user_;       // canonical name once logged in
    io::clock::time_point user_at_;  // when USER was accepted (PASS's deadline)
    mail::maildrop_lock lock_;  // held from the login's +OK to the end
    auth::failure_tracker::attempt attempt_;  // the password check under way, until its verdict
    io::clock::time_point attempt_at_;        // when it began: a failure is answered at this + the delay
    bool waiting_for_command_ = false;  // the watchdog may say -ERR only then
    std::optional<mail::maildir> md_;
};

// The user's maildrop, locked and scanned (blocking: the filesystem). On
// any status but ok the lock is not held.
struct pop3_session::opened_maildrop {
    enum class status { ok, in_use, bad_name, unavailable } what = status::unavailable;
    std::filesystem::path path;
    std::vector<mail::message_entry> messages;
    std::string error;
    mail::maildrop_lock lock;  // held when what == ok
};

char const* yes_no(bool b) noexcept;

}  // namespace popgate::session
