// `popgate serve`: the daemon frame. Binds the listeners, drops privileges,
// spawns one coroutine per session, purges expired rows, reloads on SIGHUP and
// drains on SIGTERM.
#include "popgate/daemon/serve.hpp"

#include "popgate/daemon/context.hpp"
#include "popgate/daemon/fd_limit.hpp"
#include "popgate/daemon/state_dirs.hpp"
#include "popgate/io/blocking.hpp"
#include "popgate/io/io_threads.hpp"
#include "popgate/io/tls.hpp"
#include "popgate/log/log.hpp"
#include "popgate/mail/maildir.hpp"
#include "popgate/metrics/catalog.hpp"
#include "popgate/server/frame.hpp"
#include "popgate/store/open.hpp"

#include <boost/asio.hpp>
#include <signal.h>
#include <malloc.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <thread>
#include <tuple>
#include <utility>

namespace popgate::daemon {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct listener_info {
    config::listener cfg;
    std::uint16_t bound_port = 0;
};

// The certificate and key as read at start, as root: after the switch to
// server.user the files need not be readable (the key should not be), so a
// reload that cannot read them builds its context from these.
struct kept_tls {
    std::filesystem::path cert_file, key_file;
    io::tls_material material;
};

struct server {
    // Declared first, destroyed last: sessions still open when io is destroyed
    // release their admission slots and maildrop locks in the context.
    std::unique_ptr<context> ctx;
    std::unique_ptr<io::io_threads> io;  // made once server.threads is known
    std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
    std::vector<listener_info> listeners;
    std::string config_file;
    service_account account;
    std::optional<kept_tls> kept;  // only when the daemon switches users
    std::size_t nofile = 0;        // RLIMIT_NOFILE after raising it at start
    std::size_t threads = 0;       // I/O and blocking threads: fixed at start
    std::size_t services_bound = 0;  // service protocols (policy, HTTP) bound: fixed at start, as the listeners
    // What the daemon was started with, --db applied: the values a reload
    // cannot change are compared with these (keep_start_only).
    std::shared_ptr<config::settings const> started;
    bool database_from_command_line = false;  // serve --db: it stands for the file's
    std::unique_ptr<asio::signal_set> signals;
    bool draining = false;
};

// The certificate and key (made first when self_signed and both are
// missing; load_tls says when that may be). Started as root, a self-signed pair in a directory the
// account controls (the default var/tls, /var/lib/popgate/tls) is made with
// the account's ids: root writing there by path could be led by a link
// anywhere.
io::tls_material read_tls(config::settings const& s, service_account const& a)
{
    // A pair that is there (one an older popgate made as root, in a
    // directory only root may read) is read as root, as always, through
    // open_to_read: no link or other name the account could have put in its
    // way is followed (a key of root's served as popgate's own).
    bool const to_make = makes_self_signed(s.tls);
    std::optional<as_account> as;
    if (to_make && ::geteuid() == 0 &&
        (account_can_redirect(s.tls.cert_file, a) || account_can_redirect(s.tls.key_file, a)))
        as.emplace(a);
    bool const made = io::ensure_self_signed(s.tls, s.hostname);
    as.reset();
    if (made)
        spdlog::info("tls self-signed certificate created cert={} key={}", s.tls.cert_file.string(),
                     s.tls.key_file.string());
    return io::read_tls_material(s.tls,
                                 [&a](auto const& file, std::string& why) { return open_to_read(file, a, why); });
}

// The certificates about to be served: their notAfter to the metric, and a
// warning line for one that expires within 14 days or has expired (clients
// that verify refuse it; most mail clients ask their user first).
void note_expiry(io::tls_material const& m)
{
    auto const now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    for (auto const& [key, pem] : {std::pair{"tls.cert_file", &m.cert_chain_pem},
                                   std::pair{"tls.second_cert_file", &m.second_cert_chain_pem}}) {
        auto const at = io::not_after(*pem);
        metrics::tls_certificate_expiry.with({key}).set(at.value_or(0));
        if (!at) continue;
        if (*at <= now)
            spdlog::error("tls certificate expired certificate={} days_ago={}: clients that verify refuse it", key,
                          (now - *at) / 86400);
        else if (auto const days = (*at - now + 86399) / 86400; days <= 14)  // begun days count
            spdlog::warn("tls certificate expires soon certificate={} days_left={}", key, days);
    }
}

// `in_service`: the certificate new connections get now (none at start,
// nor before a reload first turns TLS on).
std::shared_ptr<asio::ssl::context> load_tls(server& srv, config::settings const& s, bool in_service)
{
    if (!s.uses_tls()) return nullptr;
    // A certificate in service is never replaced by a self-signed one: a
    // mistyped path in a renewed config (or a pair deleted by mistake) had
    // the reload make one and serve it, logged as routine. Refused before
    // the fallback below, which keeps serving but applies the rest.
    if (in_service && makes_self_signed(s.tls))
        throw std::runtime_error("tls.cert_file " + s.tls.cert_file.string() + " and tls.key_file " +
                                 s.tls.key_file.string() +
                                 " are both missing: a reload does not replace the certificate in service with a "
                                 "self-signed one (tls.self_signed makes one at start, or at the reload that first "
                                 "turns TLS on); check the paths");
    io::tls_material m;
    try {
        m = read_tls(s, srv.account);
    } catch (std::exception const& e) {
        // After the switch the service user usually may not read the key:
        // keep serving what was read as root rather than fail the reload.
        auto const& k = srv.kept;
        if (!k || k->cert_file != s.tls.cert_file || k->key_file != s.tls.key_file) throw;
        spdlog::warn("reload: {}; keeping the certificate read at start (or at the last reload that could read it): "
                     "let {} read tls.cert_file and tls.key_file to renew it on SIGHUP, or restart",
                     e.what(), srv.account.name);
        auto ctx = io::make_server_tls(s.tls, k->material);
        note_expiry(k->material);
        return ctx;
    }
    auto ctx = io::make_server_tls(s.tls, m);
    note_expiry(m);
    if (srv.account.switches) srv.kept = kept_tls{s.tls.cert_file, s.tls.key_file, std::move(m)};
    return ctx;
}

// Stored rows that decisions cannot use as written, logged once each
// (relay::decider::check_rows): at start, then after every purge.
asio::awaitable<void> check_rows(server& srv)
{
    try {
        co_await io::run_blocking(srv.ctx->blocking(), [&] { srv.ctx->decider().check_rows(); });
    } catch (std::exception const& e) {
        spdlog::error("row check failed: {}", e.what());
    }
}

asio::awaitable<void> purge_loop(server& srv)
{
    asio::steady_timer t(co_await asio::this_coro::executor);
    co_await check_rows(srv);
    for (;;) {
        t.expires_after(srv.ctx->settings()->purge_interval);
        auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec || srv.draining) co_return;
        srv.ctx->failures().expire(std::chrono::steady_clock::now());
        auto const s = srv.ctx->settings();
        try {
            auto [grants, audit, stale] = co_await io::run_blocking(srv.ctx->blocking(), [&] {
                auto const now = store::now();
                // The drop folder's reader never sees its tmp/: what a
                // crashed delivery left there goes here.
                auto const wall = std::chrono::system_clock::now();
                std::size_t const tmp = s->upstream_host.empty() && !s->relay_drop.empty()
                                            ? mail::maildir(s->relay_drop).remove_stale_tmp(wall)
                                            : 0;
                return std::tuple{srv.ctx->db().purge_expired_grants(now),
                                  srv.ctx->db().purge_audit(s->audit_max_rows,
                                                            now - std::int64_t{86400} * s->audit_max_age_days),
                                  tmp};
            });
            if (grants || audit || stale)
                spdlog::info("purge expired_grants={} audit_rows={} stale_drop_tmp={}", grants, audit, stale);
        } catch (std::exception const& e) {
            spdlog::error("purge failed: {}", e.what());
        }
        co_await check_rows(srv);
    }
}

// Idle upstream connections go once relay.upstream_reuse_time is over, not
// only when the next message looks for one: each holds an smtpd of the
// upstream, which would time it out and log that.
asio::awaitable<void> upstream_sweep_loop(server& srv)
{
    asio::steady_timer t(co_await asio::this_coro::executor);
    for (;;) {
        t.expires_after(std::chrono::seconds(1));
        auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec || srv.draining) co_return;
        srv.ctx->upstreams().expire(srv.ctx->settings()->upstream_reuse_time);
    }
}

log::destination log_destination(config::log_target t)
{
    switch (t) {
    case config::log_target::stderr_stream: return log::destination::stderr_stream;
    case config::log_target::file: return log::destination::file;
    case config::log_target::syslog: return log::destination::syslog;
    }
    return log::destination::stderr_stream;
}

// log.file opened again from its path (logrotate, `mv`); log.target and
// log.file themselves take effect at the next start.
void reopen_log()
{
    std::string why;
    if (log::reopen(why))
        spdlog::info("log reopened");
    else
        spdlog::error("log not reopened, still writing to the old file: {}", why);
}

// What a reload cannot change, because it is set up once at start: the
// store (and, for SQLite, the group given its files; for PostgreSQL, the
// statement timeout), the threads, the service account and the log
// destination. A changed value is said (the administrator expects it to
// apply) and the running one kept, so that the live settings tell what is
// in force.
void keep_start_only(config::settings& fresh, config::settings const& started)
{
    auto const keep = [](std::string_view key, auto& now, auto const& was, auto show) {
        if (now == was) return;
        spdlog::warn("reload: {} changed from {} to {}: it needs a restart, the running value is kept", key,
                     show(was), show(now));
        now = was;
    };
    auto const text = [](auto const& v) { return log::field(std::string(v), 200); };
    auto const path = [](std::filesystem::path const& p) { return log::field(p.string(), 200); };
    auto const number = [](unsigned n) { return n ? std::to_string(n) : std::string("0 (one per core)"); };
    auto const target = [](config::log_target t) {
        switch (t) {
        case config::log_target::file: return std::string("file");
        case config::log_target::syslog: return std::string("syslog");
        case config::log_target::stderr_stream: break;
        }
        return std::string("stderr");
    };
    keep("storage.database", fresh.database, started.database, path);
    keep("storage.group", fresh.database_group, started.database_group, text);
    if (started.database_is_postgresql())
        keep("storage.busy_timeout_ms", fresh.busy_timeout, started.busy_timeout,
             [](std::chrono::milliseconds ms) { return std::to_string(ms.count()); });
    // A grant row holds its prefix's base address, not the prefix: read
    // with another length it names another network (see popgate.toml(5)).
    keep("relay.ipv6_prefix", fresh.ipv6_prefix, started.ipv6_prefix, number);
    keep("server.threads", fresh.threads, started.threads, number);
    keep("server.user", fresh.run_as_user, started.run_as_user, text);
    keep("server.group", fresh.run_as_group, started.run_as_group, text);
    keep("log.target", fresh.log_to, started.log_to, target);
    keep("log.file", fresh.log_file, started.log_file, text);
}

void reload(server& srv)
{
    auto r = config::load_effective(srv.config_file);
    if (!r.value) {
        // One log line, as every other: the errors joined.
        auto errors = config::format_errors(r, srv.config_file);
        while (!errors.empty() && errors.back() == '\n') errors.pop_back();
        for (std::size_t i = 0; (i = errors.find('\n', i)) != std::string::npos;) errors.replace(i, 1, "; ");
        spdlog::error("reload refused, keeping the running configuration: {}", errors);
        return;
    }
    if (srv.database_from_command_line) r.value->database = srv.started->database;
    keep_start_only(*r.value, *srv.started);
    // A reload must not undo the cap that the descriptors set, for the
    // listeners as bound (a reload binds none and closes none).
    cap_sessions_to_fds(*r.value, srv.nofile, srv.threads, srv.services_bound);
    auto fresh = std::make_shared<config::settings const>(std::move(*r.value));
    // A file with any error is refused whole, as check-config refuses it: a
    // key that does not match its certificate leaves every other change out
    // too, so that the running settings still say what is in force.
    decltype(load_tls(srv, *fresh, true)) tls;
    try {
        tls = load_tls(srv, *fresh, srv.ctx->live().tls() != nullptr);
    } catch (std::exception const& e) {
        spdlog::error("reload refused, keeping the running configuration: TLS not reloaded, the old certificate "
                      "stays: {}",
                      e.what());
        return;
    }
    // Sessions hold their own reference to the context they started with:
    // live TLS sessions go on with the old certificate, new ones get this.
    if (tls) srv.ctx->live().set_tls(std::move(tls));
    for (auto const& li : srv.listeners) {
        auto const same = [&](config::listener const& l) { return l.same_binding(li.cfg); };
        // A reload may turn STARTTLS on for a bound listener: its handshake
        // series read 0 from now, not 1 at the first failure. Only bound
        // listeners: one the new file adds waits for a restart, series too.
        auto const it = std::find_if(fresh->listeners.begin(), fresh->listeners.end(), same);
        if (it != fresh->listeners.end())
            metrics::declare_listener(it->name, it->protocol, it->tls != config::tls_mode::none);
        else
            spdlog::warn("reload: listener {} changed its name, address, port, protocol or implicit TLS (or is "
                         "gone): it keeps its policy as started until a restart",
                         li.cfg.name);
    }
    for (auto const& l : fresh->listeners) {
        auto const bound = [&](listener_info const& li) { return li.cfg.same_binding(l); };
        if (std::none_of(srv.listeners.begin(), srv.listeners.end(), bound))
            spdlog::warn("reload: listener {} is not bound (new, or its binding changed): it waits for a restart",
                         l.name);
    }
    spdlog::set_level(spdlog::level::from_str(fresh->log_level));
    srv.ctx->reload(std::move(fresh));
    spdlog::info("reload done (listeners are kept as bound; a change of listeners needs a restart)");
}

asio::awaitable<void> signal_loop(server& srv, asio::signal_set& sigs)
{
    for (;;) {
        auto [ec, sig] = co_await sigs.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec) co_return;
        if (sig == SIGUSR1) {
            reopen_log();
            continue;
        }
        if (sig == SIGHUP) {
            reopen_log();
            spdlog::info("SIGHUP: reloading configuration and certificates");
            reload(srv);
            // A database file deleted or replaced under the daemon is opened
            // again from its path (created and migrated as at start). Off the
            // I/O thread: migrating waits for a locked database.
            auto& db = srv.ctx->db();
            auto job = [&db] { return db.reopen_if_moved(); };
            try {
                bool const reopened = co_await io::run_blocking(srv.ctx->blocking(), job);
                if (!reopened) spdlog::debug("reload: database file unchanged");
            } catch (std::exception const& e) {
                spdlog::error("reload: database not reopened, logins and relay decisions still fail: {}", e.what());
            }
            continue;
        }
        spdlog::info("signal {}: draining sessions={}", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                     srv.ctx->active_sessions());
        srv.draining = true;
        srv.ctx->set_state(session::serving_state::draining);
        // Mail and policy listeners close at once. HTTP ones answer on until
        // the process ends: a balancer's or orchestrator's probe then reads
        // /readyz "503 not ready: draining" (and takes the node out), not a
        // refused connection it could take for a crash.
        for (std::size_t i = 0; i < srv.acceptors.size(); ++i) {
            if (srv.listeners[i].cfg.protocol == "http") continue;
            boost::system::error_code ignored;
            srv.acceptors[i]->close(ignored);
        }
        // Sessions finish what they are doing; whatever is still open after
        // the grace period is cut. Nothing is lost by that: a POP3 session that
        // never reached UPDATE deletes nothing, and an SMTP message never
        // answered 250 is the client's to send again.
        asio::steady_timer t(co_await asio::this_coro::executor);
        auto const until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (srv.ctx->active_sessions() > 0 && std::chrono::steady_clock::now() < until) {
            t.expires_after(std::chrono::milliseconds(50));
            co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        // Cut what is left the way a timeout does, so that each session still
        // logs its end and runs after_close() (an upstream transaction is
        // reset or closed, not left to the upstream's timeout). A session
        // awaiting the upstream's verdict on a message is spared until it is
        // in (relay.upstream_data_done_timeout, at most 60 s more; the
        // packaged unit's TimeoutStopSec leaves room): the upstream may have
        // queued it, and a client cut now would send it again.
        if (auto const left = srv.ctx->active_sessions(); left > 0) {
            auto& open = srv.ctx->sessions();
            spdlog::info("drain over, ending sessions={} reason=shutdown awaiting_upstream={}", left,
                         open.awaiting_verdict());
            open.cut_all(true);
            auto const spare = std::min<std::chrono::steady_clock::duration>(
                srv.ctx->settings()->upstream_data_done_timeout, std::chrono::seconds(60));
            auto const spare_until = std::chrono::steady_clock::now() + spare;
            while (open.awaiting_verdict() > 0 && std::chrono::steady_clock::now() < spare_until) {
                t.expires_after(std::chrono::milliseconds(20));
                co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
            }
            open.cut_all();
            auto const cut_until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
            while (srv.ctx->active_sessions() > 0 && std::chrono::steady_clock::now() < cut_until) {
                t.expires_after(std::chrono::milliseconds(20));
                co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
            }
        }
        spdlog::info("stopped sessions_left={}", srv.ctx->active_sessions());
        srv.io->stop();  // serve() then closes the idle upstream connections
        co_return;
    }
}

void drop_privileges(service_account const& a)
{
    if (::geteuid() != 0) return;
    if (!a.switches) {
        spdlog::warn("running as root: set server.user to drop privileges after binding");
        return;
    }
    become_account(a);
    spdlog::info("privileges dropped user={} uid={} gid={}", a.name, a.uid, a.gid);
}

// A JSON string: quotes, backslashes and control characters escaped (RFC 8259 §7).
std::string json_string(std::string_view v)
{
    std::string out = "\"";
    for (char const c : v) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
            out += buf;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

// Writes all of `data` to `fd`, fsyncs and closes it. The step that failed
// and its errno; {"", 0} when none did. A short write (a full disk) is a
// failure, not half a file.
std::pair<char const*, int> write_synced_and_close(int fd, std::string_view data)
{
    char const* what = "";
    int err = 0;
    for (std::size_t done = 0; done < data.size();) {
        auto const n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            what = "write";
            err = n < 0 ? errno : EIO;
            break;
        }
        done += static_cast<std::size_t>(n);
    }
    if (err == 0 && ::fsync(fd) != 0) {
        what = "fsync";
        err = errno;
    }
    if (::close(fd) != 0 && err == 0) {
        what = "close";
        err = errno;
    }
    return {what, err};
}

// {"listener name": bound port, ...}: tests and scripts read the ports here.
void write_ready_file(std::string const& path, std::vector<listener_info> const& ls)
{
    std::string json = "{";
    for (std::size_t i = 0; i < ls.size(); ++i)
        json += (i ? ", " : "") + json_string(ls[i].cfg.name) + ": " + std::to_string(ls[i].bound_port);
    json += "}\n";
    std::string const tmp = path + ".tmp";
    // Each step checked: a directory the daemon may not write was reported
    // as the rename's "No such file".
    auto const fail = [&](char const* what, int err) {
        throw std::runtime_error("cannot write the ready file: " + std::string(what) + " " + tmp + ": " +
                                 std::strerror(err));
    };
    // A new file, never one found there: a link planted at the .tmp name
    // would have had the daemon (root, at this point) write through it.
    if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) fail("unlink", errno);
    int const fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) fail("open", errno);
    // From here on, whatever fails leaves no .tmp behind.
    auto const [what, err] = write_synced_and_close(fd, json);
    std::error_code ec;
    if (err == 0) std::filesystem::rename(tmp, path, ec);  // readers never see half a file
    if (err == 0 && !ec) return;
    ::unlink(tmp.c_str());
    if (err != 0) fail(what, err);
    throw std::runtime_error("cannot write the ready file: rename to " + path + ": " + ec.message());
}

}  // namespace

int serve(std::string const& config_file, std::string const& db_override, serve_options const& o)
{
    auto r = config::load_effective(config_file);
    if (!r.value) {
        std::cerr << "popgate: invalid configuration:\n" << config::format_errors(r, config_file);
        return 1;
    }
    auto settings = std::make_shared<config::settings>(std::move(*r.value));
    if (!db_override.empty()) {
        if (auto const why = config::database_problem(db_override); !why.empty()) {
            std::cerr << "popgate: --db: " << why << "\n";
            return 1;
        }
        settings->database = db_override;
        if (auto const why = config::busy_timeout_problem(*settings); !why.empty()) {
            std::cerr << "popgate: --db: storage." << why << "\n";
            return 1;
        }
    }
    server srv;
    srv.config_file = config_file;
    srv.database_from_command_line = !db_override.empty();
    try {
        srv.account = find_service_account(*settings);
        // Made before spdlog opens it, so that its mode (0640) does not depend on the umask.
        int const log_fd = prepare_log_file(settings->log_file, srv.account);
        log::setup(settings->log_level, log_destination(settings->log_to), settings->log_file, log_fd);
        srv.nofile = raise_nofile_limit();
        ::umask(077);  // every file the daemon makes (database, Maildirs, keys) is private
        // OpenSSL writes a TLS session's socket itself (io::tls_socket) with
        // write(2), which raises SIGPIPE when the client has reset the
        // connection: its default action would end the daemon. The write
        // fails with EPIPE instead and the session ends. (Asio's own writes
        // use MSG_NOSIGNAL; libpq guards its own.) systemd ignores SIGPIPE
        // for the packaged unit, but not a shell, a container or a test.
        ::signal(SIGPIPE, SIG_IGN);
        // Before any thread starts (the check takes the service user's ids for a moment).
        prepare_state_dirs(*settings, srv.account);
        // glibc hands freed memory back to the kernel as soon as 128 KB sit at
        // the top of a heap: on a busy daemon that is an madvise() per burst,
        // and each one interrupts every core to flush its TLB (a fifth of the
        // CPU of a login storm, measured with perf). Keep up to 64 MB for reuse.
        ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
        ::mallopt(M_MMAP_THRESHOLD, 4 << 20);
        auto tls = load_tls(srv, *settings, false);
        unsigned const cores = std::max(1u, std::thread::hardware_concurrency());
        store::open_options so;
        so.busy_timeout = settings->busy_timeout;
        so.keep_wal_files = !settings->database_group.empty();
        // PostgreSQL: the blocking threads, the writer and the admin-facing
        // HTTP routes each hold one connection at a time; the watcher its own.
        so.watch_networks = true;
        so.max_connections = std::max(2u, cores) + 2;
        // SQLite: opened with the account's ids, as every later connection
        // of the pool is. Root would follow what the account may have put
        // in its directory (SQLite probes a -journal and hands new files to
        // the database's owner); the account gains nothing it did not have.
        std::unique_ptr<store::store> db;
        if (settings->database_is_postgresql()) {
            db = store::open_store(settings->database.string(), so);
        } else {
            check_database_usable(*settings, srv.account);
            as_account const as(srv.account);
            db = store::open_store(settings->database.string(), so);
        }
        share_database(*settings, srv.account);  // storage.group, now that the files exist
        srv.threads = std::max(2u, cores) + (settings->threads ? settings->threads : cores);
        srv.services_bound = service_protocols(settings->listeners);
        cap_sessions_to_fds(*settings, srv.nofile, srv.threads, srv.services_bound);
        srv.started = settings;
        srv.ctx = std::make_unique<context>(settings, std::move(db), std::max(2u, cores));
        srv.io = std::make_unique<io::io_threads>(settings->threads ? settings->threads : cores);
        srv.ctx->watch_io_threads(*srv.io);
        srv.ctx->live().set_tls(std::move(tls));

        for (auto const& l : settings->listeners) {
            auto const addr = asio::ip::make_address(l.address);
            auto acc = std::make_unique<tcp::acceptor>(srv.io->main());
            tcp::endpoint ep(addr, l.port);
            acc->open(ep.protocol());
            acc->set_option(tcp::acceptor::reuse_address(true));
            if (addr.is_v6()) acc->set_option(asio::ip::v6_only(true));
            boost::system::error_code ec;
            acc->bind(ep, ec);
            if (ec)
                throw std::runtime_error("listener '" + l.name + "': cannot bind " + l.address + ":" +
                                         std::to_string(l.port) + ": " + ec.message());
            acc->listen(asio::socket_base::max_listen_connections);
            srv.listeners.push_back({l, acc->local_endpoint().port()});
            srv.acceptors.push_back(std::move(acc));
        }
        // Signals are caught from here on: a SIGHUP or SIGTERM sent as soon
        // as the ready file appears must not find the default action (which
        // ends the process) before the signal loop has started.
        srv.signals = std::make_unique<asio::signal_set>(srv.io->main(), SIGHUP, SIGTERM, SIGINT);
        srv.signals->add(SIGUSR1);
        // Written while still privileged: the ready file's directory belongs
        // to whoever started the daemon, not to the service user.
        if (!o.ready_file.empty()) write_ready_file(o.ready_file, srv.listeners);
        drop_privileges(srv.account);
    } catch (std::exception const& e) {
        std::cerr << "popgate: " << e.what() << "\n";
        spdlog::error("startup failed: {}", e.what());
        return 1;
    }

    for (std::size_t i = 0; i < srv.acceptors.size(); ++i) {
        auto const& li = srv.listeners[i];
        spdlog::info("listening name={} protocol={} address={} port={} tls={}{}", li.cfg.name, li.cfg.protocol,
                     li.cfg.address, li.bound_port, config::to_string(li.cfg.tls),
                     li.cfg.auth_required ? " auth_required=yes" : "");
        asio::co_spawn(srv.io->main(),
                       popgate::server::accept_loop(*srv.acceptors[i], li.cfg, *srv.ctx->protocol(li.cfg.protocol),
                                                    srv.ctx->frame_env(), *srv.io),
                       asio::detached);
    }
    srv.ctx->set_state(session::serving_state::serving);
    asio::co_spawn(srv.io->main(), signal_loop(srv, *srv.signals), asio::detached);
    asio::co_spawn(srv.io->main(), purge_loop(srv), asio::detached);
    asio::co_spawn(srv.io->main(), upstream_sweep_loop(srv), asio::detached);

    spdlog::info("popgate {} started threads={} database={}", POPGATE_VERSION, srv.io->size(),
                 log::field(store::database_label(settings->database.string())));
    srv.io->run();
    srv.ctx->upstreams().close_all();  // their sockets belong to io
    // Blocking jobs still running hold work on io's executor and post their
    // completions to it: let them finish while io still exists. Then io is
    // destroyed (with any unfinished session frames, which release their
    // slots in the context), and the context last.
    srv.ctx->blocking().join();
    // Likewise the writer: a grant commit's completion holds work on io.
    srv.ctx->writes().stop();
    return 0;
}

}  // namespace popgate::daemon
