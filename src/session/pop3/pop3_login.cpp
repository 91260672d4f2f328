// The POP3 login effects: USER's lookup, the PASS / APOP / AUTH checks, the
// brute-force accounting, and a successful login (maildrop locked and
// scanned, grant committed, then +OK).
#include "pop3_session.hpp"

// GCC 12 reports the coroutine frames' own operator new/delete pair as
// mismatched once inlining sees both (GCC bug 109224, a false positive).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include "popgate/auth/plaintext.hpp"
#include "popgate/io/blocking.hpp"
#include "popgate/log/log.hpp"
#include "popgate/session/login_grant.hpp"

namespace popgate::session {
namespace {

// RFC 5034 §4 does not bound SASL responses by the 255-octet command limit;
// sasl_server refuses decoded responses above 4096 octets anyway.
constexpr std::size_t sasl_line_max = 8192;

}  // namespace

asio::awaitable<bool> pop3_session::do_user(std::string name)
{
    // Every name gets +OK: whether it exists, or may log in only with APOP,
    // is for PASS to find out, with the same answer for all of them.
    auto step = pop3_user_checked(st_, std::move(name));
    user_at_ = io::clock::now();
    ch_.write_log(step.log);
    co_return co_await ch_.send(step.reply);
}

// An address, or a name at an address, blocked by the brute-force defence
// is not even asked for a password check. [AUTH] (RFC 3206): the refusal is
// about this client's authentication attempts; the text says it is temporary.
asio::awaitable<bool> pop3_session::refuse_if_blocked(bool& refused, std::string const& user, std::string_view mech)
{
    refused = false;
    std::optional<auth::failure_tracker::block> b;
    if (user.empty())
        b = auth_blocked(svc_.guard, c_);
    else
        b = co_await auth_admit(svc_.guard, c_, user, attempt_);
    attempt_at_ = io::clock::now();
    if (!b) co_return true;
    refused = true;
    st_.pending_user.clear();
    count_login("pop3", mech, "blocked");
    // busy: checks beside this one still under way after seconds, not a
    // block of its own (result=busy, which fail2ban's filter does not ban).
    spdlog::info("sid={} pop3 login ip={} result={} {} retry_after={}s", c_.sid, c_.ip,
                 b->busy ? "busy" : "blocked", block_fields(b->scope, user), b->left.count());
    // Counted as an error: a blocked client does not keep its session by asking.
    auto step = pop3_bad_command(st_, rules_,
                                 "-ERR [AUTH] Too many authentication failures " + std::string(blocked_what(*b)) +
                                     ", try again in " + std::to_string(b->left.count()) + " seconds\r\n");
    co_return co_await run_step(step);
}

pop3_session::opened_maildrop pop3_session::open_maildrop(std::string const& user)
{
    opened_maildrop o;
    try {
        o.path = mail::user_maildir(s_.maildir, user);
    } catch (std::exception const& e) {
        o.what = opened_maildrop::status::bad_name;
        o.error = e.what();
        return o;
    }
    auto taken = mail::maildrop_lock::take(o.path);
    switch (taken.what) {
    case mail::maildrop_lock::status::ok: break;
    case mail::maildrop_lock::status::in_use: o.what = opened_maildrop::status::in_use; return o;
    case mail::maildrop_lock::status::failed:
        o.what = opened_maildrop::status::unavailable;
        o.error = std::move(taken.error);
        return o;
    }
    try {
        mail::maildir m(o.path);
        std::vector<std::string> notes;
        try {
            o.messages = m.scan(&svc_.sizes, &notes);
        } catch (std::filesystem::filesystem_error const& e) {
            if (e.code() != std::errc::no_such_file_or_directory) throw;
            m.ensure();  // a missing Maildir (or part of one) is created
            o.messages = m.scan(&svc_.sizes, &notes);
        }
        for (auto const& n : notes)
            spdlog::warn("sid={} maildir user={} renamed={}", c_.sid, log::field(user, 64), log::field(n, 600));
        // What a crashed delivery left in tmp/ (ours or another agent's).
        if (auto const stale = m.remove_stale_tmp(std::chrono::system_clock::now()))
            spdlog::info("sid={} maildir user={} removed_stale_tmp={}", c_.sid, log::field(user, 64), stale);
    } catch (std::exception const& e) {
        o.what = opened_maildrop::status::unavailable;
        o.error = e.what();
        return o;
    }
    o.what = opened_maildrop::status::ok;
    o.lock = std::move(taken.lock);
    return o;
}

asio::awaitable<bool> pop3_session::do_pass(std::string const& user, std::string const& password)
{
    bool refused = false;
    if (!co_await refuse_if_blocked(refused, user, "pass")) co_return false;
    if (refused) co_return true;
    co_return co_await password_login(user, password, "pass");
}

asio::awaitable<bool> pop3_session::password_login(std::string const& user, std::string const& password,
                                                   std::string_view mech)
{
    // crypt(3) and, when it succeeds, the maildrop in one hop to the pool.
    auto job = [this, &user, &password] {
        std::pair<auth::result, std::optional<opened_maildrop>> out;
        out.first = svc_.auth.check_password(user, password);
        if (out.first.what == auth::outcome::ok) out.second = open_maildrop(out.first.user);
        return out;
    };
    auto [r, opened] = co_await io::run_blocking(svc_.blocking, job);
    co_return co_await finish_auth(r, mech, user, std::move(opened));
}

asio::awaitable<bool> pop3_session::do_apop(std::string const& user, std::string const& digest)
{
    bool refused = false;
    if (!co_await refuse_if_blocked(refused, user, "apop")) co_return false;
    if (refused) co_return true;
    // No shared secret: the same answer as a wrong digest (no enumeration).
    // No crypt(3): one MD5, checked in place unless the read crosses the network.
    auto job = [&] { return svc_.auth.check_apop(user, timestamp_, digest); };
    auto const r = co_await io::run_here_or_blocking(svc_.auth.in_place(), svc_.blocking, job);
    co_return co_await finish_auth(r, "apop", user, std::nullopt);
}

asio::awaitable<bool> pop3_session::do_auth(proto::sasl_mech m, std::optional<std::string_view> initial)
{
    bool refused = false;
    if (!co_await refuse_if_blocked(refused, {}, pop3_mech_name(m))) co_return false;  // the name comes with the exchange
    if (refused) co_return true;
    spdlog::debug("sid={} pop3 auth mech={} initial_response={}", c_.sid, proto::sasl_mech_name(m),
                  yes_no(initial.has_value()));
    std::string const challenge = m == proto::sasl_mech::cram_md5 ? unique_challenge(s_.hostname) : std::string{};
    proto::sasl_server sasl(m, challenge);
    auto const x = co_await sasl_exchange(ch_, sasl, initial, "+ ", std::max(s_.pop3_max_line, sasl_line_max),
                                          waiting_for_command_);
    switch (x.status) {
    case io::read_status::ok: break;
    case io::read_status::too_long: {
        auto bad = pop3_bad_command(st_, rules_, "-ERR SASL response too long\r\n");
        co_return co_await run_step(bad);
    }
    case io::read_status::too_slow: c_.end_reason = "timeout-command"; co_return false;
    default: c_.end_reason = x.status == io::read_status::timed_out ? "timeout" : "eof"; co_return false;
    }
    auto const& step = x.step;
    std::string const mech = pop3_mech_name(m);
    attempt_at_ = io::clock::now();  // the check begins now, not before the client's answer
    if (step.what == proto::sasl_step::kind::check_password || step.what == proto::sasl_step::kind::check_cram) {
        if (!co_await refuse_if_blocked(refused, step.authcid, mech)) co_return false;
        if (refused) co_return true;
    }
    switch (step.what) {
    case proto::sasl_step::kind::check_password: co_return co_await password_login(step.authcid, step.password, mech);
    case proto::sasl_step::kind::check_cram: {
        // No crypt(3) here: checked as APOP.
        auto job = [&] { return svc_.auth.check_cram_md5(step.authcid, challenge, step.digest); };
        auto const r = co_await io::run_here_or_blocking(svc_.auth.in_place(), svc_.blocking, job);
        co_return co_await finish_auth(r, mech, step.authcid, std::nullopt);
    }
    case proto::sasl_step::kind::cancelled:
        spdlog::info("sid={} pop3 auth mech={} ip={} result=cancelled", c_.sid, mech, c_.ip);
        co_return co_await ch_.send("-ERR Authentication cancelled\r\n");
    default: break;
    }
    // Malformed exchange (bad base64, authzid mismatch, empty fields).
    auto const e = step.error.value_or(proto::errc::bad_arguments);
    if (e == proto::errc::bad_base64 || e == proto::errc::too_long) {
        auto bad = pop3_bad_command(
            st_, rules_, e == proto::errc::bad_base64 ? "-ERR Invalid base64 data\r\n" : "-ERR SASL response too long\r\n");
        co_return co_await run_step(bad);
    }
    auth::result r;
    r.what = auth::outcome::failed;
    r.reason = "malformed " + std::string(proto::sasl_mech_name(m)) + " response";
    co_return co_await finish_auth(r, mech, step.authcid, std::nullopt);
}

// Turns the authenticator's verdict into the login or the failure reply.
asio::awaitable<bool> pop3_session::finish_auth(auth::result const& r, std::string_view mech,
                                                std::string const& attempted, std::optional<opened_maildrop> opened)
{
    st_.pending_user.clear();
    auto under_way = std::move(attempt_);  // ends with this verdict
    if (r.what == auth::outcome::ok) co_return co_await complete_login(r, mech, std::move(opened));

    auto const uesc = log::field(attempted, 64);
    if (r.what == auth::outcome::unavailable) {
        count_login("pop3", mech, "unavailable");
        spdlog::error("sid={} pop3 login user={} ip={} mech={} result=unavailable error={}", c_.sid, uesc, c_.ip, mech,
                      log::field(r.reason));
        co_return co_await ch_.send(pop3_reply::auth_unavailable);
    }
    count_login("pop3", mech, "fail");
    spdlog::info("sid={} pop3 login user={} ip={} mech={} tls={} result=fail reason={}", c_.sid, uesc, c_.ip, mech,
                 yes_no(c_.stream.tls_active()), log::field(r.reason.empty() ? "failed" : r.reason));
    auto const v = record_auth_failure(svc_.guard, c_, attempted, auth::name_kind_of(r),
                                       "pop3 mech=" + std::string(mech) + " reason=" + log::field(r.reason));
    under_way = {};  // counted as a failure now
    if (v.now_blocked != auth::block_scope::none)
        spdlog::warn("sid={} pop3 auth-block ip={} {} failures_ip={} failures_user_ip={} unknown_names_ip={} "
                     "block_time={}s",
                     c_.sid, c_.ip, block_fields(v.now_blocked, attempted), v.ip_count, v.pair_count, v.names,
                     s_.block_time.count());
    co_await pause_after_failure(ch_, v.delay, attempt_at_);
    // An apop-only user who tried another mechanism gets the same answer as
    // a wrong password (the log says apop-only user): a different one would
    // tell which names exist.
    co_return co_await ch_.send(pop3_reply::auth_failed);
}

// The guard rails decide whether this login grants (relay/grant_issuer);
// the login succeeds either way. Committed on return: an SMTP connection
// after our +OK sees the grant. False (logged) when it could not be.
asio::awaitable<bool> pop3_session::record_login(auth::result const& r, std::string_view mech, bool tls,
                                                 relay::grant_plan& plan)
{
    auto const& user = r.user;
    try {
        login_event const l{c_.peer, user, std::string(mech), tls, c_.listener.name, c_.listener.grant, "pop3",
                            c_.client_named, r.checked};
        plan = co_await commit_login_grant(svc_.blocking, svc_.writes, svc_.grants, l, s_);
        co_return true;
    } catch (std::exception const& e) {
        spdlog::error("sid={} pop3 grant failed user={} ip={} error={}", c_.sid, log::field(user, 64), c_.ip,
                      log::field(e.what()));
    }
    co_return false;
}

// Locks and opens the maildrop (unless the password check already did, in
// the same hop to the blocking pool), commits the grant, then +OK. Any
// failure leaves the session in AUTHORIZATION with the lock released.
asio::awaitable<bool> pop3_session::complete_login(auth::result const& r, std::string_view mech,
                                                   std::optional<opened_maildrop> opened)
{
    auto const& user = r.user;
    auto const uesc = log::field(user, 64);
    bool const tls = c_.stream.tls_active();
    if (!opened) {
        auto job = [this, &user] { return open_maildrop(user); };
        opened = co_await io::run_blocking(svc_.blocking, job);
    }
    // Right credentials, and the maildrop or the grant failed: "unavailable".
    if (opened->what != opened_maildrop::status::ok) count_login("pop3", mech, "unavailable");
    switch (opened->what) {
    case opened_maildrop::status::ok: break;
    case opened_maildrop::status::in_use:
        spdlog::info("sid={} pop3 login user={} ip={} mech={} tls={} result=in-use", c_.sid, uesc, c_.ip, mech,
                     yes_no(tls));
        co_return co_await ch_.send("-ERR [IN-USE] Maildrop is locked by another POP3 session\r\n");
    case opened_maildrop::status::bad_name:
        spdlog::error("sid={} pop3 maildrop user={} error={}", c_.sid, uesc, log::field(opened->error));
        co_return co_await ch_.send("-ERR [SYS/PERM] This user name cannot have a maildrop\r\n");
    case opened_maildrop::status::unavailable:
        spdlog::error("sid={} pop3 maildrop user={} path={} error={}", c_.sid, uesc,
                      log::field(opened->path.string()), log::field(opened->error));
        co_return co_await ch_.send("-ERR [SYS/TEMP] Unable to open the maildrop, try again later\r\n");
    }
    lock_ = std::move(opened->lock);
    user_ = user;

    relay::grant_plan plan;
    bool const recorded = co_await record_login(r, mech, tls, plan);
    if (!recorded) {
        count_login("pop3", mech, "unavailable");
        lock_.release();
        user_.clear();
        co_return co_await ch_.send("-ERR [SYS/TEMP] Unable to record the login, try again later\r\n");
    }

    md_.emplace(opened->path);
    auto const ok = pop3_logged_in(st_, std::move(opened->messages));
    count_login("pop3", mech, "ok");
    spdlog::info("sid={} pop3 login user={} ip={} mech={} tls={} result=ok {} messages={} octets={}", c_.sid, uesc,
                 c_.ip, mech, yes_no(tls), plan.log_fields, st_.box->live_count(), st_.box->live_octets());
    co_return co_await ch_.send(ok);
}

}  // namespace popgate::session
