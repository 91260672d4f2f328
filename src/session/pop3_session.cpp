// The POP3 session (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH,
// RFC 8314 implicit TLS): one coroutine per connection. The command loop is a
// template on the stream so the same code runs in clear and under TLS; the
// pure parts (state table, CAPA, maildrop view) are in pop3_state.cpp.
//
// A successful login locks the maildrop, opens it, writes the relay grant and
// only then answers +OK (DESIGN decision 4). Deletions happen only when QUIT
// is received in TRANSACTION; a timeout or a dropped connection deletes nothing.
#include "popgate/session/pop3_session.hpp"

#include "popgate/daemon/blocking.hpp"
#include "popgate/log/log.hpp"
#include "popgate/session/line_io.hpp"
#include "popgate/session/sessions.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <optional>
#include <utility>

namespace popgate::session {
namespace {

namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using proto::pop3_verb;

// RFC 5034 §4 does not bound SASL responses by the 255-octet command limit;
// sasl_server refuses decoded responses above 4096 octets anyway.
constexpr std::size_t sasl_line_max = 8192;
constexpr std::size_t retr_chunk = 64 * 1024;

enum class loop_end { closed, upgrade };

// Everything one connection knows; lives in serve_pop3's frame for the whole
// session, across the STLS upgrade.
struct pop3_session {
    pop3_session(daemon::context& c, daemon::listener_info const& li, net::ip_address a)
        : ctx(c),
          l(li),
          s(c.settings()),
          tls_ctx(c.tls()),
          sid(log::new_session_id()),
          peer(a),
          ip(a.to_string()),
          reader(s->pop3_max_line)
    {
    }
    pop3_session(pop3_session const&) = delete;
    pop3_session& operator=(pop3_session const&) = delete;
    ~pop3_session()
    {
        if (locked) ctx.unlock_maildrop(user);
    }

    daemon::context& ctx;
    daemon::listener_info const& l;
    std::shared_ptr<config::settings const> s;   // snapshot: a SIGHUP does not change a live session
    std::shared_ptr<ssl::context> tls_ctx;       // kept alive for the session (reload swaps the daemon's)
    std::string sid;
    net::ip_address peer;
    std::string ip;
    session_clock clock;
    line_reader reader;
    bool tls_active = false;
    pop3_phase phase = pop3_phase::authorization;
    std::string timestamp;      // APOP (RFC 1939 §7); empty when auth.apop is off
    std::string pending_user;   // after USER, before PASS
    std::string user;           // canonical name once logged in
    std::string mech;
    bool locked = false;
    std::optional<pop3_maildrop> box;
    std::optional<mail::maildir> md;
    std::size_t bad = 0;
    std::size_t junk = 0;  // NOOP/RSET/STAT/CAPA since the last progress
    std::size_t auth_failures = 0;   // hook for brute-force hardening
    std::string end_reason = "eof";

    clock::duration idle() const { return s->pop3_idle_timeout; }
    bool plaintext_ok() const { return ctx.secure_for_plaintext(tls_active, peer); }
    pop3_offer offer() const
    {
        pop3_offer o;
        o.stls = l.cfg.tls == config::tls_mode::starttls && !tls_active && tls_ctx != nullptr;
        o.plaintext = plaintext_ok();
        o.cram_md5 = s->cram_md5;
        return o;
    }
    void unlock()
    {
        if (locked) ctx.unlock_maildrop(user);
        locked = false;
    }
    // A login that failed after the lock was taken: back to AUTHORIZATION.
    void abandon_login()
    {
        unlock();
        user.clear();
    }
};

std::string const msg_auth_failed = "-ERR [AUTH] Authentication failed.\r\n";
std::string const msg_apop_required = "-ERR [AUTH] You must use APOP to connect to this server\r\n";
std::string const msg_plaintext_refused =
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
std::string const msg_auth_unavailable = "-ERR [SYS/TEMP] Authentication service unavailable, try again later\r\n";

std::uint64_t random64()
{
    std::uint64_t v = 0;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof v) != 1)
        throw std::runtime_error("RAND_bytes failed");
    return v;
}

std::string unique_timestamp(std::string_view host)
{
    return proto::make_apop_timestamp(static_cast<std::uint64_t>(::getpid()),
                                      static_cast<std::uint64_t>(std::time(nullptr)), random64(), host);
}

std::string iso_utc(store::unix_time t)
{
    std::time_t const tt = static_cast<std::time_t>(t);
    std::tm tm{};
    ::gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

char const* yes_no(bool b) { return b ? "yes" : "no"; }

struct fd_guard {
    int fd;
    ~fd_guard()
    {
        if (fd >= 0) ::close(fd);
    }
};

template <class Stream>
asio::awaitable<bool> send(Stream& st, pop3_session& p, std::string_view data)
{
    co_return co_await write_all(st, data, p.clock, p.idle());
}

// Answers a protocol error and counts it; false when the session must end
// (limits.max_bad_commands reached, or the peer is gone).
template <class Stream>
asio::awaitable<bool> bad_command(Stream& st, pop3_session& p, std::string_view reply)
{
    ++p.bad;
    if (p.s->max_bad_commands > 0 && p.bad >= p.s->max_bad_commands) {
        spdlog::warn("sid={} pop3 too-many-errors ip={} count={}", p.sid, p.ip, p.bad);
        p.end_reason = "too-many-errors";
        co_await send(st, p, "-ERR too many errors\r\n");
        co_return false;
    }
    co_return co_await send(st, p, reply);
}

asio::awaitable<void> pause(std::chrono::milliseconds d)
{
    if (d.count() <= 0) co_return;
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(asio::use_awaitable);
}

// The user's maildrop, locked and scanned; blocking (filesystem). On any
// status but ok the lock is not held.
struct opened_maildrop {
    enum class status { ok, in_use, bad_name, unavailable } what = status::unavailable;
    std::filesystem::path path;
    std::vector<mail::message_entry> messages;
    std::string error;
};

opened_maildrop open_maildrop(daemon::context& ctx, config::settings const& s, std::string const& user)
{
    opened_maildrop o;
    if (!ctx.lock_maildrop(user)) {
        o.what = opened_maildrop::status::in_use;
        return o;
    }
    try {
        o.path = mail::user_maildir(s.maildir, user);
    } catch (std::exception const& e) {
        ctx.unlock_maildrop(user);
        o.what = opened_maildrop::status::bad_name;
        o.error = e.what();
        return o;
    }
    try {
        mail::maildir m(o.path);
        try {
            o.messages = m.scan(&ctx.sizes());
        } catch (std::filesystem::filesystem_error const& e) {
            if (e.code() != std::errc::no_such_file_or_directory) throw;
            m.ensure();  // a missing Maildir (or part of one) is created
            o.messages = m.scan(&ctx.sizes());
        }
    } catch (std::exception const& e) {
        ctx.unlock_maildrop(user);
        o.what = opened_maildrop::status::unavailable;
        o.error = e.what();
        return o;
    }
    o.what = opened_maildrop::status::ok;
    return o;
}

// Locks and opens the maildrop (unless the password check already did, in
// the same hop to the blocking pool), writes the grant, then +OK. Any failure
// leaves the session in AUTHORIZATION with the lock released.
template <class Stream>
asio::awaitable<bool> complete_login(Stream& st, pop3_session& p, std::string const& user, std::string_view mech,
                                     std::optional<opened_maildrop> opened = std::nullopt)
{
    auto& ctx = p.ctx;
    auto const uesc = log::escape(user, 64);
    if (!opened) {
        // Only references in the job: GCC 12 may destroy a temporary of a
        // co_await expression twice, which a captured shared_ptr would not survive.
        auto const& s = *p.s;
        opened = co_await daemon::run_blocking(ctx.blocking(), [&ctx, &s, &user] { return open_maildrop(ctx, s, user); });
    }
    switch (opened->what) {
    case opened_maildrop::status::ok: break;
    case opened_maildrop::status::in_use:
        spdlog::info("sid={} pop3 login user={} ip={} mech={} tls={} result=in-use", p.sid, uesc, p.ip, mech,
                     yes_no(p.tls_active));
        co_return co_await send(st, p, "-ERR [IN-USE] Maildrop is locked by another POP3 session\r\n");
    case opened_maildrop::status::bad_name:
        spdlog::error("sid={} pop3 maildrop user={} error={}", p.sid, uesc, log::escape(opened->error));
        co_return co_await send(st, p, "-ERR [SYS/PERM] This user name cannot have a maildrop\r\n");
    case opened_maildrop::status::unavailable:
        spdlog::error("sid={} pop3 maildrop user={} path={} error={}", p.sid, uesc,
                      log::escape(opened->path.string()), log::escape(opened->error));
        co_return co_await send(st, p, "-ERR [SYS/TEMP] Unable to open the maildrop, try again later\r\n");
    }
    p.locked = true;
    p.user = user;
    auto const path = std::move(opened->path);
    auto messages = std::move(opened->messages);

    store::grant g;
    g.address = ctx.relay().grant_keys(p.peer).front();
    g.user = user;
    g.method = std::string(mech);
    g.tls = p.tls_active;
    g.listener = p.l.cfg.name;
    g.granted_at = store::now();
    g.expires_at = g.granted_at + p.s->grant_ttl.count();
    bool granted = false;
    try {
        // Committed on return: an SMTP connection after our +OK sees it.
        std::vector<store::write_op> ops;
        ops.emplace_back(g);
        ops.emplace_back(store::audit_record{
            "grant", p.ip, user,
            "pop3 mech=" + g.method + " listener=" + g.listener + " until=" + iso_utc(g.expires_at)});
        co_await ctx.writes().commit(std::move(ops));
        granted = true;
    } catch (std::exception const& e) {
        spdlog::error("sid={} pop3 grant failed user={} ip={} error={}", p.sid, uesc, p.ip, log::escape(e.what()));
    }
    if (!granted) {
        p.abandon_login();
        co_return co_await send(st, p, "-ERR [SYS/TEMP] Unable to record the login, try again later\r\n");
    }

    p.md.emplace(path);
    p.box.emplace(std::move(messages));
    p.phase = pop3_phase::transaction;
    p.junk = 0;  // progress
    p.pending_user.clear();
    p.mech = std::string(mech);
    spdlog::info("sid={} pop3 login user={} ip={} mech={} tls={} result=ok grant={} grant_until={} messages={} "
                 "octets={}",
                 p.sid, uesc, p.ip, mech, yes_no(p.tls_active), g.address, iso_utc(g.expires_at),
                 p.box->live_count(), p.box->live_octets());
    co_return co_await send(st, p,
                            proto::pop3_ok("Logged in, maildrop has " + std::to_string(p.box->live_count()) +
                                           " messages (" + std::to_string(p.box->live_octets()) + " octets)"));
}

// crypt(3) and, when it succeeds, the maildrop in one hop to the blocking pool.
asio::awaitable<std::pair<auth::result, std::optional<opened_maildrop>>>
check_password_and_open(pop3_session& p, std::string const& user, std::string const& password)
{
    auto& ctx = p.ctx;
    auto const& s = *p.s;  // p.s outlives the job: references only (see complete_login)
    co_return co_await daemon::run_blocking(ctx.blocking(), [&ctx, &s, &user, &password] {
        std::pair<auth::result, std::optional<opened_maildrop>> out;
        out.first = ctx.auth().check_password(user, password);
        if (out.first.what == auth::outcome::ok) out.second = open_maildrop(ctx, s, out.first.user);
        return out;
    });
}

// Turns the authenticator's verdict into the login or the failure reply.
template <class Stream>
asio::awaitable<bool> finish_auth(Stream& st, pop3_session& p, auth::result const& r, std::string_view mech,
                                  std::string const& attempted, std::optional<opened_maildrop> opened = std::nullopt)
{
    p.pending_user.clear();
    if (r.what == auth::outcome::ok) co_return co_await complete_login(st, p, r.user, mech, std::move(opened));

    auto const uesc = log::escape(attempted, 64);
    if (r.what == auth::outcome::unavailable) {
        spdlog::error("sid={} pop3 login user={} ip={} mech={} result=unavailable error={}", p.sid, uesc, p.ip, mech,
                      log::escape(r.reason));
        co_return co_await send(st, p, msg_auth_unavailable);
    }
    ++p.auth_failures;
    spdlog::info("sid={} pop3 login user={} ip={} mech={} tls={} result=fail reason={}", p.sid, uesc, p.ip, mech,
                 yes_no(p.tls_active), log::escape(r.reason.empty() ? "failed" : r.reason));
    p.ctx.writes().post(store::audit_record{"auth-fail", p.ip, attempted, "pop3 mech=" + std::string(mech) +
                                                                             " reason=" + r.reason});
    // Brute-force defence: the delay grows with this address's and this
    // name's recent failures; past the threshold the address is blocked.
    auto const v = p.ctx.failures().record_failure(p.peer, attempted, std::chrono::steady_clock::now());
    if (v.now_blocked)
        spdlog::warn("sid={} pop3 address blocked ip={} failures={} block_time={}s", p.sid, p.ip, v.ip_count,
                     p.s->block_time.count());
    co_await pause(v.delay);
    co_return co_await send(st, p, r.what == auth::outcome::apop_required ? msg_apop_required : msg_auth_failed);
}

// An address blocked by the brute-force defence is not even asked for a
// password check. [SYS/TEMP], not [AUTH]: the stored password may be right
// and the client should not throw it away (RFC 3206 §4).
template <class Stream>
asio::awaitable<bool> refuse_if_blocked(Stream& st, pop3_session& p, bool& refused)
{
    refused = false;
    auto const left = p.ctx.failures().blocked(p.peer, std::chrono::steady_clock::now());
    if (!left) co_return true;
    refused = true;
    p.pending_user.clear();
    spdlog::info("sid={} pop3 login ip={} result=blocked retry_after={}s", p.sid, p.ip, left->count());
    // [AUTH] (RFC 3206), as issue 5 asks: the refusal is about this client's
    // authentication attempts; the text says it is temporary.
    co_return co_await send(st, p, "-ERR [AUTH] Too many authentication failures from your address, try again in " +
                                       std::to_string(left->count()) + " seconds\r\n");
}

template <class Stream>
asio::awaitable<bool> cmd_user(Stream& st, pop3_session& p, std::string_view args)
{
    if (!p.plaintext_ok()) co_return co_await send(st, p, msg_plaintext_refused);
    if (args.empty()) co_return co_await bad_command(st, p, "-ERR USER needs a user name\r\n");
    std::string name(args);
    std::optional<store::user_record> u;
    try {
        // An indexed read, as the SMTP relay decision makes: no hop to the
        // blocking pool (only writes and crypt(3) go there).
        u = p.ctx.db().find_user(name);
    } catch (std::exception const& e) {
        // PASS will ask again and answer [SYS/TEMP] if the store is still down.
        spdlog::error("sid={} pop3 user lookup failed error={}", p.sid, log::escape(e.what()));
    }
    if (u && u->apop_only) {
        p.pending_user.clear();
        spdlog::info("sid={} pop3 login user={} ip={} mech=pass result=fail reason=apop-only", p.sid,
                     log::escape(name, 64), p.ip);
        co_return co_await send(st, p, msg_apop_required);
    }
    p.pending_user = std::move(name);
    co_return co_await send(st, p, "+OK\r\n");
}

template <class Stream>
asio::awaitable<bool> cmd_pass(Stream& st, pop3_session& p, std::string_view args)
{
    if (p.pending_user.empty()) co_return co_await bad_command(st, p, "-ERR USER first\r\n");
    if (!p.plaintext_ok()) {
        p.pending_user.clear();
        co_return co_await send(st, p, msg_plaintext_refused);
    }
    bool refused = false;
    auto const ok = co_await refuse_if_blocked(st, p, refused);
    if (!ok) co_return false;
    if (refused) co_return true;
    std::string const user = p.pending_user;
    std::string const password(args);
    auto [r, opened] = co_await check_password_and_open(p, user, password);
    co_return co_await finish_auth(st, p, r, "pass", user, std::move(opened));
}

template <class Stream>
asio::awaitable<bool> cmd_apop(Stream& st, pop3_session& p, std::string_view args)
{
    if (p.timestamp.empty()) co_return co_await send(st, p, "-ERR [AUTH] APOP is not available on this server\r\n");
    auto a = proto::parse_apop_args(args);
    if (!a) co_return co_await bad_command(st, p, "-ERR APOP needs a user name and a 32-digit hex digest\r\n");
    bool refused = false;
    auto const ok = co_await refuse_if_blocked(st, p, refused);
    if (!ok) co_return false;
    if (refused) co_return true;
    std::string const user(a->first), digest(a->second);
    // An indexed read and one MD5: cheaper than the hop to the blocking pool
    // and back (which is kept for crypt(3) and writes).
    auto const r = p.ctx.auth().check_apop(user, p.timestamp, digest);
    // No shared secret: the same answer as a wrong digest (no enumeration).
    co_return co_await finish_auth(st, p, r, "apop", user);
}

template <class Stream>
asio::awaitable<bool> cmd_auth(Stream& st, pop3_session& p, std::string_view args)
{
    auto const o = p.offer();
    if (args.empty()) co_return co_await send(st, p, pop3_auth_list(o));
    auto const sp = args.find(' ');
    auto const name = args.substr(0, sp);
    std::optional<std::string_view> initial;
    if (sp != args.npos) initial = args.substr(sp + 1);
    auto const m = proto::parse_sasl_mech(name);
    auto const offered = pop3_sasl_mechs(o);
    if (!m || std::find(offered.begin(), offered.end(), *m) == offered.end()) {
        if (m && proto::sasl_is_plaintext(*m) && !o.plaintext) co_return co_await send(st, p, msg_plaintext_refused);
        co_return co_await send(st, p, "-ERR Unsupported authentication mechanism\r\n");
    }
    bool refused = false;
    auto const ok = co_await refuse_if_blocked(st, p, refused);
    if (!ok) co_return false;
    if (refused) co_return true;
    spdlog::debug("sid={} pop3 auth mech={} initial_response={}", p.sid, proto::sasl_mech_name(*m),
                  yes_no(initial.has_value()));
    std::string const challenge = *m == proto::sasl_mech::cram_md5 ? unique_timestamp(p.s->hostname) : std::string{};
    proto::sasl_server server(*m, challenge);
    auto step = server.start(initial);
    p.reader.set_max(std::max(p.s->pop3_max_line, sasl_line_max));
    while (step.what == proto::sasl_step::kind::challenge) {
        auto const sent = co_await send(st, p, "+ " + proto::base64_encode(step.challenge) + "\r\n");
        if (!sent) co_return false;
        std::string line;
        auto const rs = co_await p.reader.read(st, line, p.clock, p.idle());
        if (rs == read_status::too_long) {
            p.reader.set_max(p.s->pop3_max_line);
            co_return co_await bad_command(st, p, "-ERR SASL response too long\r\n");
        }
        if (rs != read_status::ok) {
            p.end_reason = rs == read_status::timed_out ? "timeout" : "eof";
            co_return false;
        }
        p.clock.arm(p.idle());
        if (!line.empty() && line.back() == '\n') line.pop_back();
        step = server.next(line);
    }
    p.reader.set_max(p.s->pop3_max_line);

    std::string const mech = "sasl-" + [&] {
        std::string n(proto::sasl_mech_name(*m));
        for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return n;
    }();
    switch (step.what) {
    case proto::sasl_step::kind::check_password: {
        auto [r, opened] = co_await check_password_and_open(p, step.authcid, step.password);
        co_return co_await finish_auth(st, p, r, mech, step.authcid, std::move(opened));
    }
    case proto::sasl_step::kind::check_cram: {
        // No crypt(3) here: checked in place, as APOP.
        auto const r = p.ctx.auth().check_cram_md5(step.authcid, challenge, step.digest);
        co_return co_await finish_auth(st, p, r, mech, step.authcid);
    }
    case proto::sasl_step::kind::cancelled:
        spdlog::info("sid={} pop3 auth mech={} ip={} result=cancelled", p.sid, mech, p.ip);
        co_return co_await send(st, p, "-ERR Authentication cancelled\r\n");
    default: break;
    }
    // Malformed exchange (bad base64, authzid mismatch, empty fields).
    auto const e = step.error.value_or(proto::errc::bad_arguments);
    if (e == proto::errc::bad_base64) co_return co_await bad_command(st, p, "-ERR Invalid base64 data\r\n");
    if (e == proto::errc::too_long) co_return co_await bad_command(st, p, "-ERR SASL response too long\r\n");
    auth::result r;
    r.what = auth::outcome::failed;
    r.reason = "malformed " + std::string(proto::sasl_mech_name(*m)) + " response";
    co_return co_await finish_auth(st, p, r, mech, step.authcid);
}

// RETR / TOP: the first line, then the stuffed message read in chunks, never
// held whole in memory. false: the session must end (peer gone or a read
// error after +OK, which no reply could correct).
template <class Stream>
asio::awaitable<bool> send_message(Stream& st, pop3_session& p, mail::message_entry const& m,
                                   std::optional<std::uint32_t> top)
{
    fd_guard f{::open(m.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
    if (f.fd < 0) {
        int const err = errno;
        spdlog::warn("sid={} pop3 open message user={} path={} error={}", p.sid, log::escape(p.user, 64),
                     log::escape(m.path.string()), std::strerror(err));
        co_return co_await send(st, p,
                                err == ENOENT ? "-ERR [SYS/TEMP] Message is no longer available\r\n"
                                              : "-ERR [SYS/TEMP] Unable to read the message\r\n");
    }
    std::string out = top ? "+OK top of message follows\r\n" : "+OK " + std::to_string(m.size) + " octets\r\n";
    proto::pop3_stuffer stuffer(top);
    std::string buf(retr_chunk, '\0');
    while (!stuffer.done()) {
        auto const n = ::read(f.fd, buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            spdlog::error("sid={} pop3 read message path={} error={}", p.sid, log::escape(m.path.string()),
                          std::strerror(errno));
            p.end_reason = "read-error";
            co_return false;
        }
        if (n == 0) break;
        stuffer.feed({buf.data(), static_cast<std::size_t>(n)}, out);
        if (out.size() >= retr_chunk) {
            auto const ok = co_await send(st, p, out);
            if (!ok) co_return false;
            out.clear();
        }
    }
    stuffer.finish(out);
    co_return co_await send(st, p, out);
}

template <class Stream>
asio::awaitable<bool> cmd_quit(Stream& st, pop3_session& p)
{
    p.end_reason = "quit";
    if (p.phase == pop3_phase::authorization) {
        co_await send(st, p, "+OK popgate POP3 server signing off\r\n");
        co_return false;
    }
    // UPDATE (RFC 1939 §6): remove the marked messages, then answer.
    auto const marked = p.box->marked();
    std::size_t failed = 0;
    if (!marked.empty()) {
        failed = co_await daemon::run_blocking(p.ctx.blocking(), [&] {
            std::size_t f = 0;
            for (auto const& m : marked) {
                try {
                    p.md->remove(m);
                } catch (std::exception const& e) {
                    spdlog::error("sid={} pop3 delete failed user={} error={}", p.sid, log::escape(p.user, 64),
                                  log::escape(e.what()));
                    ++f;
                }
            }
            return f;
        });
    }
    spdlog::info("sid={} pop3 update user={} deleted={} failed={} left={}", p.sid, log::escape(p.user, 64),
                 marked.size() - failed, failed, p.box->live_count());
    p.unlock();
    if (failed)
        co_await send(st, p, "-ERR [SYS/TEMP] Some deleted messages not removed\r\n");
    else if (p.box->live_count() == 0)
        co_await send(st, p, "+OK popgate POP3 server signing off (maildrop empty)\r\n");
    else
        co_await send(st, p,
                      "+OK popgate POP3 server signing off (" + std::to_string(p.box->live_count()) +
                          " messages left)\r\n");
    co_return false;
}

template <class Stream>
asio::awaitable<bool> cmd_stls(Stream& st, pop3_session& p, bool& upgrade)
{
    if (p.l.cfg.tls != config::tls_mode::starttls || !p.tls_ctx)
        co_return co_await bad_command(st, p, "-ERR STLS not offered on this port\r\n");
    if (p.tls_active) co_return co_await bad_command(st, p, "-ERR Command not permitted when TLS active\r\n");
    bool const sent = co_await send(st, p, "+OK Begin TLS negotiation\r\n");
    if (!sent) co_return false;
    // CVE-2011-0411: bytes the client sent after STLS in clear must never be
    // executed under TLS. Drop them and anything half-entered.
    if (p.reader.has_pending())
        spdlog::warn("sid={} pop3 stls discarded_bytes={} ip={}", p.sid, p.reader.pending().size(), p.ip);
    p.reader.clear();
    p.pending_user.clear();
    upgrade = true;
    co_return false;
}

template <class Stream>
asio::awaitable<bool> dispatch(Stream& st, pop3_session& p, proto::pop3_command const& c, bool& upgrade)
{
    if (!pop3_allowed(c.verb, p.phase))
        co_return co_await bad_command(st, p, "-ERR Command not valid in this state\r\n");
    auto const args = c.args;
    switch (c.verb) {
    case pop3_verb::noop:
    case pop3_verb::rset:
    case pop3_verb::stat:
    case pop3_verb::capa:
        // Endless commands that change nothing (limits.max_junk_commands).
        if (++p.junk > p.s->max_junk_commands) {
            spdlog::warn("sid={} pop3 too many commands without progress ip={} count={}", p.sid, p.ip, p.junk);
            p.end_reason = "too-many-junk-commands";
            co_await send(st, p, "-ERR [SYS/TEMP] Too many commands without progress\r\n");
            co_return false;
        }
        break;
    case pop3_verb::retr:
    case pop3_verb::top:
    case pop3_verb::dele: p.junk = 0; break;
    default: break;
    }
    switch (c.verb) {
    case pop3_verb::capa: co_return co_await send(st, p, pop3_capa(p.offer(), p.phase));
    case pop3_verb::quit: co_return co_await cmd_quit(st, p);
    case pop3_verb::user: co_return co_await cmd_user(st, p, args);
    case pop3_verb::pass: co_return co_await cmd_pass(st, p, args);
    case pop3_verb::apop: co_return co_await cmd_apop(st, p, args);
    case pop3_verb::auth: co_return co_await cmd_auth(st, p, args);
    case pop3_verb::stls: co_return co_await cmd_stls(st, p, upgrade);
    case pop3_verb::noop:
        if (!args.empty()) co_return co_await bad_command(st, p, "-ERR NOOP takes no argument\r\n");
        co_return co_await send(st, p, "+OK\r\n");
    case pop3_verb::stat:
        if (!args.empty()) co_return co_await bad_command(st, p, "-ERR STAT takes no argument\r\n");
        co_return co_await send(st, p, p.box->stat());
    case pop3_verb::rset:
        if (!args.empty()) co_return co_await bad_command(st, p, "-ERR RSET takes no argument\r\n");
        co_return co_await send(st, p, p.box->rset());
    case pop3_verb::list: co_return co_await send(st, p, p.box->list(args));
    case pop3_verb::uidl: co_return co_await send(st, p, p.box->uidl(args));
    case pop3_verb::dele:
        if (args.empty()) co_return co_await bad_command(st, p, "-ERR DELE needs a message number\r\n");
        co_return co_await send(st, p, p.box->dele(args));
    case pop3_verb::retr: {
        if (args.empty()) co_return co_await bad_command(st, p, "-ERR RETR needs a message number\r\n");
        auto const l = p.box->find(args);
        if (!l.msg) co_return co_await send(st, p, l.error);
        co_return co_await send_message(st, p, *l.msg, std::nullopt);
    }
    case pop3_verb::top: {
        auto const a = proto::parse_top_args(args);
        if (!a) co_return co_await bad_command(st, p, "-ERR TOP needs a message number and a line count\r\n");
        auto const l = p.box->find(a->first);
        if (!l.msg) co_return co_await send(st, p, l.error);
        co_return co_await send_message(st, p, *l.msg, a->second);
    }
    }
    co_return co_await bad_command(st, p, "-ERR Unknown command\r\n");
}

std::string_view parse_error_reply(proto::errc e)
{
    switch (e) {
    case proto::errc::empty_line: return "-ERR Empty command\r\n";
    case proto::errc::line_too_long: return "-ERR line too long\r\n";
    case proto::errc::nul_byte: return "-ERR NUL byte in command\r\n";
    case proto::errc::bare_cr_or_lf: return "-ERR Bare CR in command\r\n";
    default: return "-ERR Unknown command\r\n";
    }
}

template <class Stream>
asio::awaitable<loop_end> command_loop(Stream& st, pop3_session& p)
{
    for (;;) {
        std::string line;
        auto const rs = co_await p.reader.read(st, line, p.clock, p.idle());
        switch (rs) {
        case read_status::ok: break;
        case read_status::too_long: {
            spdlog::debug("sid={} pop3 line too long", p.sid);
            auto const go_on = co_await bad_command(st, p, "-ERR line too long\r\n");
            if (!go_on) co_return loop_end::closed;
            continue;
        }
        case read_status::eof: p.end_reason = "eof"; co_return loop_end::closed;
        case read_status::timed_out: p.end_reason = "timeout"; co_return loop_end::closed;
        case read_status::error: p.end_reason = "error"; co_return loop_end::closed;
        }
        p.clock.arm(p.idle());   // the command's own work gets a full period too
        // A bare LF ends a command too (lenient like Dovecot; POP3 has no
        // smuggling hazard in commands).
        if (!line.empty() && line.back() == '\n') line.pop_back();
        auto const cmd = proto::parse_pop3(line);
        if (!cmd) {
            spdlog::debug("sid={} pop3 bad line={} error={}", p.sid, log::escape(line.substr(0, line.find(' ')), 16),
                          cmd.error().message());
            auto const go_on = co_await bad_command(st, p, parse_error_reply(static_cast<proto::errc>(cmd.error().value())));
            if (!go_on) co_return loop_end::closed;
            continue;
        }
        if (proto::pop3_secret_args(cmd->verb))
            spdlog::debug("sid={} pop3 cmd={}", p.sid, proto::to_string(cmd->verb));
        else
            spdlog::debug("sid={} pop3 cmd={} args={}", p.sid, proto::to_string(cmd->verb), log::escape(cmd->args, 80));
        bool upgrade = false;
        bool const go_on = co_await dispatch(st, p, *cmd, upgrade);
        if (upgrade) co_return loop_end::upgrade;
        if (!go_on) co_return loop_end::closed;
    }
}

template <class Stream>
asio::awaitable<bool> greet(Stream& st, pop3_session& p)
{
    std::string text = "+OK popgate POP3 server ready";
    if (!p.timestamp.empty()) text += " " + p.timestamp;
    co_return co_await send(st, p, text + "\r\n");
}

asio::awaitable<bool> handshake(ssl::stream<tcp::socket&>& st, pop3_session& p)
{
    p.clock.arm(p.s->tls_handshake_timeout);
    auto [ec] = co_await st.async_handshake(ssl::stream_base::server, asio::as_tuple(asio::use_awaitable));
    if (ec) {
        p.end_reason = p.clock.expired ? "tls-timeout" : "tls-failed";
        spdlog::info("sid={} pop3 tls handshake failed ip={} error={}", p.sid, p.ip,
                     p.clock.expired ? std::string("timeout") : log::escape(ec.message()));
        co_return false;
    }
    p.tls_active = true;
    spdlog::info("sid={} pop3 tls ip={} version={} cipher={}", p.sid, p.ip, SSL_get_version(st.native_handle()),
                 SSL_get_cipher_name(st.native_handle()));
    co_return true;
}

asio::awaitable<void> run_session(tcp::socket& sock, pop3_session& p)
{
    // When the watchdog wins the race it closes the socket and the || cancels
    // this branch. Without this, the next co_await would throw before its
    // operation started, skipping the session's own handling of the failed
    // read (a DATA abort went unlogged, the end reason lost its detail).
    // Every operation here fails on the closed socket instead and is handled
    // through its error code.
    co_await asio::this_coro::throw_if_cancelled(false);
    if (p.l.cfg.tls == config::tls_mode::implicit) {
        if (!p.tls_ctx) {
            spdlog::error("sid={} pop3 no TLS context for implicit-TLS listener={}", p.sid, p.l.cfg.name);
            p.end_reason = "no-tls";
            co_return;
        }
        ssl::stream<tcp::socket&> st(sock, *p.tls_ctx);
        auto const shaken = co_await handshake(st, p);
        if (!shaken) co_return;
        auto const greeted = co_await greet(st, p);
        if (!greeted) co_return;
        co_await command_loop(st, p);
        co_return;
    }
    auto const greeted = co_await greet(sock, p);
    if (!greeted) co_return;
    auto const end = co_await command_loop(sock, p);
    if (end != loop_end::upgrade) co_return;
    ssl::stream<tcp::socket&> st(sock, *p.tls_ctx);
    auto const shaken = co_await handshake(st, p);
    if (!shaken) co_return;
    // RFC 2595 §4: no new greeting; the session stays in AUTHORIZATION.
    co_await command_loop(st, p);
}

}  // namespace

asio::awaitable<void> serve_pop3(tcp::socket sock, daemon::listener_info const& l, daemon::context& ctx)
{
    using namespace asio::experimental::awaitable_operators;
    boost::system::error_code ec;
    auto const ep = sock.remote_endpoint(ec);
    if (ec) co_return;   // gone before we looked
    auto const peer = net::parse_ip(ep.address().to_string());
    if (!peer) co_return;

    std::string why;
    if (!ctx.admit(*peer, why)) {
        spdlog::warn("pop3 refused ip={} listener={} reason={}", peer->to_string(), l.cfg.name, why);
        // Under implicit TLS a clear-text line would be noise to the client.
        if (l.cfg.tls != config::tls_mode::implicit) {
            auto const msg = proto::pop3_err("[SYS/TEMP] " + why);
            co_await asio::async_write(sock, asio::buffer(msg), asio::as_tuple(asio::use_awaitable));
        }
        co_return;
    }
    daemon::admission const admitted{ctx, *peer};

    std::optional<pop3_session> session;
    try {
        session.emplace(ctx, l, *peer);
    } catch (std::exception const& e) {
        spdlog::error("pop3 session setup failed ip={} error={}", peer->to_string(), log::escape(e.what()));
        co_return;
    }
    auto& p = *session;
    if (p.s->apop) p.timestamp = unique_timestamp(p.s->hostname);
    spdlog::info("sid={} pop3 connect ip={} port={} listener={} tls={}", p.sid, p.ip, ep.port(), l.cfg.name,
                 config::to_string(l.cfg.tls));
    try {
        co_await (run_session(sock, p) || watchdog(sock, p.clock));
    } catch (boost::system::system_error const& e) {
        if (p.clock.expired) p.end_reason = "timeout";
        else {
            p.end_reason = "error";
            spdlog::warn("sid={} pop3 i/o error={}", p.sid, log::escape(e.what()));
        }
    } catch (std::exception const& e) {
        p.end_reason = "error";
        spdlog::error("sid={} pop3 error={}", p.sid, log::escape(e.what()));
    }
    p.clock.finished = true;
    if (p.clock.expired) p.end_reason = "timeout";
    spdlog::info("sid={} pop3 end reason={} user={} ip={}", p.sid, p.end_reason,
                 p.user.empty() ? std::string("-") : log::escape(p.user, 64), p.ip);
    boost::system::error_code ignored;
    sock.shutdown(tcp::socket::shutdown_both, ignored);
    sock.close(ignored);
}

}  // namespace popgate::session
