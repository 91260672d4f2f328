// The SMTP session coroutine: reads lines, lets smtp_on_line decide, queues
// the replies (PIPELINING: written when the client will wait for them) and
// runs the effects: the relay decision at RCPT, the SASL exchange, the TLS
// upgrade. DATA is in smtp_data.cpp.
#include "smtp_session.hpp"

// GCC 12 reports the coroutine frames' own operator new/delete pair as
// mismatched once inlining sees both (GCC bug 109224, a false positive).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include "popgate/auth/plaintext.hpp"
#include "popgate/io/blocking.hpp"
#include "popgate/log/log.hpp"

namespace popgate::session {

std::string smtp_protocol::refusal(std::string_view, config::settings const& s) const
{
    return proto::reply(421, "4.7.0", s.hostname + " Error: too many connections");
}

std::unique_ptr<server::session> smtp_protocol::open(server::connection& c)
{
    return std::make_unique<smtp_session>(s_, c);
}

smtp_session::smtp_session(smtp_services& svc, server::connection& c)
    : svc_(svc),
      c_(c),
      s_(*c.settings),
      ch_(c, std::max<std::size_t>(s_.smtp_max_line, proto::smtp_max_command_line), s_.smtp_idle_timeout),
      offer_(make_offer())
{
}

smtp_offer smtp_session::make_offer() const
{
    smtp_offer o;
    o.host = s_.hostname;
    o.ip = c_.ip;
    o.log_commands = spdlog::should_log(spdlog::level::debug);
    o.tls_active = c_.stream.tls_active();
    o.starttls_port = c_.listener.starttls();
    o.tls_required = c_.listener.tls_required();
    o.mail_needs_auth = c_.listener.auth_required && !c_.listener.local_delivery_without_auth;
    o.can_start_tls = c_.stream.can_start_tls();
    o.plaintext = auth::plaintext_allowed(s_, c_.listener, o.tls_active, c_.peer);
    o.plaintext_with_tls = auth::plaintext_allowed(s_, c_.listener, true, c_.peer);
    o.cram_md5 = s_.cram_md5;
    o.max_line = std::max<std::size_t>(s_.smtp_max_line, proto::smtp_max_command_line);
    o.max_message_size = s_.max_message_size;
    o.max_recipients = s_.max_recipients;
    o.max_bad_commands = s_.max_bad_commands;
    o.max_junk_commands = s_.max_junk_commands;
    return o;
}

// An idle client at the command prompt is told why it is cut off (RFC 5321
// §3.8: 421 at any time when the server must close).
std::string smtp_session::last_words() const
{
    if (!waiting_for_command_ || ch_.has_output()) return {};
    if (c_.clock.shutdown) return proto::reply(421, "4.3.2", host() + " Service shutting down, try again later");
    return proto::reply(421, "4.4.2", host() + " Error: timeout exceeded");
}

std::string smtp_session::end_fields() const
{
    return "ip=" + c_.ip + " messages=" + std::to_string(st_.messages) +
           " user=" + (st_.auth_user.empty() ? std::string("-") : log::field(st_.auth_user, 64));
}

asio::awaitable<bool> smtp_session::close_with(smtp_step& step)
{
    ch_.queue(step.reply);
    c_.end_reason = step.end_reason;
    bool const written = co_await ch_.flush();
    (void)written;  // the session ends either way
    co_return false;
}

asio::awaitable<bool> smtp_session::do_rcpt(proto::mail_args const& rcpt)
{
    auto const addr = rcpt.path.to_string();
    relay::request req{c_.peer, rcpt.path.local, rcpt.path.domain, addr, st_.authenticated,
                       c_.listener.auth_required, offer_.mail_needs_auth, !st_.grant_message,
                       relay::asker::smtp_listener, c_.client_named};
    auto job = [&] { return svc_.relay.decide(req, s_); };
    auto const v = co_await io::run_here_or_blocking(svc_.relay.in_place(), svc_.blocking, job);
    if (!s_.upstream_host.empty() && smtp_asks_upstream(st_, addr, v)) {
        auto const u = co_await upstream_rcpt(addr);
        auto step = smtp_rcpt_decided(st_, rcpt, v, offer_, &u);
        co_return co_await run_step(step);
    }
    auto step = smtp_rcpt_decided(st_, rcpt, v, offer_);
    co_return co_await run_step(step);
}

// RCPTs are asked one at a time, in the client's order, so that pipelined
// replies stay in order; the client waits for its group's replies meanwhile.
asio::awaitable<relay::upstream_verdict> smtp_session::upstream_rcpt(std::string const& address)
{
    if (up_ && up_txn_ != st_.transaction) co_await end_upstream();
    if (!up_) {
        auto ex = co_await asio::this_coro::executor;
        up_ = std::make_unique<relay::smtp_client>(ex, s_, c_.sid, svc_.upstreams);
        up_txn_ = st_.transaction;
    }
    // The client waits for us meanwhile; the upstream's own timeouts bound
    // this (connect, greeting, EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT, and
    // the clear retry of opportunistic TLS).
    c_.clock.arm(s_.smtp_idle_timeout + 12 * s_.upstream_timeout);
    relay::upstream_envelope const env{st_.mail_from, st_.declared_size, st_.eight_bit};
    auto v = co_await up_->recipient(env, address);
    co_return v;
}

asio::awaitable<void> smtp_session::end_upstream()
{
    auto up = std::move(up_);
    c_.clock.arm(s_.smtp_idle_timeout + 3 * s_.upstream_timeout);
    co_await up->release();
}

asio::awaitable<bool> smtp_session::do_starttls()
{
    if (ch_.reader().has_pending()) {
        // RFC 3207 §5 / CVE-2011-0411: commands sent before the handshake
        // must never run after it. Logged by the length and the command it
        // begins with, as a line that does not parse is (a known verb, never
        // the client's bytes: they may be an AUTH with its credentials).
        std::string_view const pending = ch_.reader().pending();
        auto const verb = proto::smtp_keyword_of(pending);
        spdlog::warn("sid={} smtp starttls discarded pipelined bytes ip={} count={} first={}", c_.sid, c_.ip,
                     pending.size(), verb.empty() ? std::string_view("-") : verb);
        ch_.reader().clear();
    }
    bool const written = co_await ch_.flush();
    if (!written) co_return false;
    bool const secured = co_await c_.stream.start_tls();
    if (!secured) co_return false;
    st_.forget_all();
    offer_ = make_offer();  // TLS changes what is offered
    co_return true;
}

asio::awaitable<bool> smtp_session::do_auth(std::string_view args)
{
    if (auto const b = auth_blocked(svc_.guard, c_)) {
        smtp_step s;
        s.reply = proto::reply(421, "4.7.0", host() + " Error: too many failed authentications from your address, "
                                                     "try again in " + std::to_string(b->left.count()) + " seconds");
        s.end_reason = "auth-blocked";
        count_login("smtp", {}, "blocked");
        spdlog::info("sid={} smtp auth refused ip={} reason=address-blocked seconds_left={}", c_.sid, c_.ip,
                     b->left.count());
        co_return co_await close_with(s);
    }
    auto const& o = offer_;
    auto const req = smtp_auth_start(args, o);
    if (!req.mech) {
        ch_.queue(req.refusal);
        co_return true;
    }
    auto const mech = *req.mech;
    auto const challenge = mech == proto::sasl_mech::cram_md5 ? unique_challenge(host()) : std::string();
    proto::sasl_server sasl(mech, challenge);
    auto const x = co_await sasl_exchange(ch_, sasl, req.initial, "334 ", o.max_line, waiting_for_command_);
    if (x.status == io::read_status::too_long) {
        auto s = smtp_bad_command(st_, o, proto::reply(500, "5.5.6", "Authentication Exchange line is too long"));
        co_return co_await run_step(s);
    }
    if (x.status != io::read_status::ok) {
        c_.end_reason = x.status == io::read_status::timed_out  ? "timeout"
                        : x.status == io::read_status::too_slow ? "timeout-command"
                                                                : "eof-in-auth";
        co_return false;
    }
    co_return co_await finish_auth(x.step, mech, challenge);
}

// The credentials of a finished exchange checked, and the 235 or 535.
asio::awaitable<bool> smtp_session::finish_auth(proto::sasl_step const& step, proto::sasl_mech mech,
                                                std::string const& challenge)
{
    auto const& o = offer_;
    auto const mname = proto::sasl_mech_name(mech);
    if (step.what == proto::sasl_step::kind::cancelled) {
        spdlog::info("sid={} smtp auth mech={} ip={} result=cancelled", c_.sid, mname, c_.ip);
        ch_.queue(proto::reply(501, "5.7.0", "Authentication cancelled"));
        co_return true;
    }
    if (step.what == proto::sasl_step::kind::failed && step.error == proto::errc::bad_base64) {
        spdlog::info("sid={} smtp auth mech={} ip={} result=bad-base64", c_.sid, mname, c_.ip);
        auto s = smtp_bad_command(st_, o, proto::reply(501, "5.5.2", "Cannot decode response"));
        co_return co_await run_step(s);
    }

    bool const checks = step.what == proto::sasl_step::kind::check_password ||
                        step.what == proto::sasl_step::kind::check_cram;
    std::optional<auth::failure_tracker::block> b;
    if (checks) b = co_await auth_admit(svc_.guard, c_, step.authcid, attempt_);
    if (b) {
        // This name at this address is refused for now (another user's
        // failures at the address do not get here below its ceiling), or
        // checks beside it were still under way after seconds (busy).
        count_login("smtp", mname, "blocked");
        // An address blocked since this AUTH began (other sessions' failures
        // meanwhile) is logged as at the start of an AUTH: fail2ban's filter
        // reads that line, and this name may never have failed.
        bool const address = !b->busy && b->scope == auth::block_scope::address;
        spdlog::info("sid={} smtp auth refused ip={} reason={}{} seconds_left={}", c_.sid, c_.ip,
                     b->busy ? "busy" : address ? "address-blocked" : "user-blocked",
                     address ? std::string() : " user=" + log::field(step.authcid, 64), b->left.count());
        auto s = smtp_bad_command(st_, o, proto::reply(454, "4.7.0", "Too many failed authentications " +
                                                                         std::string(blocked_what(*b)) +
                                                                         ", try again in " +
                                                                         std::to_string(b->left.count()) + " seconds"));
        co_return co_await run_step(s);
    }
    auto under_way = std::move(attempt_);  // ends with this verdict
    auto const started = io::clock::now();
    auth::result res;
    if (step.what == proto::sasl_step::kind::check_password) {
        auto job = [this, &step] { return svc_.auth.check_password(step.authcid, step.password); };
        res = co_await io::run_blocking(svc_.blocking, job);
    } else if (step.what == proto::sasl_step::kind::check_cram) {
        // An indexed read and one HMAC-MD5 (no crypt(3)): in place unless
        // the read crosses the network.
        auto job = [&] { return svc_.auth.check_cram_md5(step.authcid, challenge, step.digest); };
        res = co_await io::run_here_or_blocking(svc_.auth.in_place(), svc_.blocking, job);
    } else {
        res.what = auth::outcome::failed;
        res.reason = "malformed response";
    }
    auto const who = log::field(step.authcid.empty() ? std::string("-") : step.authcid, 64);
    if (res.what == auth::outcome::ok) {
        st_.authenticated = true;
        st_.auth_user = res.user;
        st_.junk = 0;  // progress, as the docs have it: a client that NOOPs before it logs in is served after
        count_login("smtp", mname, "ok");
        spdlog::info("sid={} smtp auth user={} mech={} ip={} tls={} result=ok", c_.sid, log::field(res.user, 64),
                     mname, c_.ip, o.tls_active ? "yes" : "no");
        ch_.queue(proto::reply(235, "2.7.0", "Authentication successful"));
        co_return true;
    }
    if (res.what == auth::outcome::unavailable) {
        count_login("smtp", mname, "unavailable");
        spdlog::error("sid={} smtp auth user={} mech={} ip={} result=unavailable reason={}", c_.sid, who, mname, c_.ip,
                      log::field(res.reason));
        ch_.queue(proto::reply(454, "4.7.0", "Temporary authentication failure"));
        co_return true;
    }
    count_login("smtp", mname, "fail");
    spdlog::info("sid={} smtp auth user={} mech={} ip={} result=failed reason={}", c_.sid, who, mname, c_.ip,
                 log::field(res.reason));
    auto const v = record_auth_failure(svc_.guard, c_, step.authcid, auth::name_kind_of(res),
                                       "smtp mech=" + std::string(mname));
    under_way = {};  // counted as a failure now
    if (v.now_blocked != auth::block_scope::none)
        spdlog::warn("sid={} smtp auth-block ip={} {} failures_ip={} failures_user_ip={} unknown_names_ip={} "
                     "block_time={}s",
                     c_.sid, c_.ip, block_fields(v.now_blocked, step.authcid), v.ip_count, v.pair_count, v.names,
                     s_.block_time.count());
    co_await pause_after_failure(ch_, v.delay, started);
    auto s = smtp_bad_command(st_, o, proto::reply(535, "5.7.8", "Error: authentication failed"));
    co_return co_await run_step(s);
}

asio::awaitable<bool> smtp_session::run_step(smtp_step& step)
{
    ch_.write_log(step.log);
    switch (step.effect) {
    case smtp_effect::reply: ch_.queue(step.reply); break;
    case smtp_effect::close: co_return co_await close_with(step);
    case smtp_effect::rcpt: co_return co_await do_rcpt(*step.rcpt);
    case smtp_effect::data: co_return co_await do_data();
    case smtp_effect::auth: co_return co_await do_auth(step.cmd.args);
    case smtp_effect::starttls: {
        ch_.queue(step.reply);
        co_return co_await do_starttls();
    }
    }
    co_return true;
}

asio::awaitable<void> smtp_session::run() { co_await converse(); }

// The client has its EOF by now: a transaction it left open upstream (QUIT
// or a drop after a relayed RCPT) is reset without the client waiting.
asio::awaitable<void> smtp_session::after_close()
{
    if (up_) co_await end_upstream();
}

asio::awaitable<void> smtp_session::converse()
{
    bool const greeted = co_await ch_.send(smtp_greeting(offer_));
    if (!greeted) co_return;
    std::string line;
    for (;;) {
        // RFC 2920 §3.1: replies go out when the client will wait for them,
        // i.e. when no complete command is left in what it sent.
        if (!ch_.reader().line_pending()) {
            bool const written = co_await ch_.flush();
            if (!written) co_return;
        }
        waiting_for_command_ = true;
        auto const rs = co_await ch_.read_line(line);
        waiting_for_command_ = false;
        smtp_step step;
        switch (rs) {
        case io::read_status::ok: step = smtp_on_line(st_, line, offer_); break;
        case io::read_status::too_long: step = smtp_on_too_long(st_, offer_); break;
        case io::read_status::eof: c_.end_reason = "eof"; co_return;
        case io::read_status::timed_out: c_.end_reason = "timeout"; co_return;
        case io::read_status::too_slow: c_.end_reason = "timeout-command"; co_return;
        case io::read_status::error: c_.end_reason = "error"; co_return;
        }
        if (!co_await run_step(step)) co_return;
        // RSET, HELO/EHLO, STARTTLS or a DATA that went nowhere upstream
        // ends the upstream transaction: the client has its reply first
        // (unless more of its pipelined group waits), not after the
        // upstream's reply to RSET.
        bool const end_up = up_ && up_txn_ != st_.transaction;
        if (step.ends_group || (end_up && !ch_.reader().line_pending())) {
            bool const written = co_await ch_.flush();
            if (!written) co_return;
        }
        if (end_up) co_await end_upstream();
    }
}

}  // namespace popgate::session
