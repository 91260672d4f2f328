// popgate_load — load generator for popgate and for the Dovecot/Postfix
// comparison (bench/README.md). One Asio thread, C++20 coroutines, one
// coroutine per simulated client; buffers are allocated once per worker, so a
// steady-state operation allocates nothing of note (Asio recycles coroutine
// frames). Prints one JSON line on stdout (run.py parses it) and a readable
// summary on stderr.
//
//   popgate_load --scenario pop3-login --port 1110 --users users.txt --auth user -c 8 -d 5
//   scenarios: pop3-login pop3-poll smtp-relay smtp-decision idle lag crypt
//   TLS: --tls implicit|starttls (POP3S/SMTPS or STLS/STARTTLS), --tls-version
//   1.2|1.3, --cert ec|rsa (which of the server's certificates the client
//   accepts), --resume (offer the worker's last session).
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <crypt.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
using clk = std::chrono::steady_clock;

namespace {

struct options {
    std::string scenario = "pop3-login";
    std::string host = "127.0.0.1";
    unsigned short port = 0;       // POP3 (or SMTP for the smtp-* scenarios when smtp_port is 0)
    unsigned short smtp_port = 0;  // SMTP (lag, idle)
    int concurrency = 8;
    double duration = 5;           // seconds; ignored when count > 0
    long count = 0;                // operations (trials), 0 = run for duration
    std::string users_file;
    std::string auth = "user";     // user | apop | plain
    int size_kb = 4;               // DATA size for smtp-relay
    int expect = 250;              // smtp-decision: expected RCPT code
    std::string rcpt = "someone@remote.example";
    std::string mail_from = "bench@example.com";
    std::string bind;              // source address for smtp-*, pop3-* (granted / ungranted)
    bool dele = true;              // pop3-poll: DELE every message
    int idle_pop3 = 0, idle_smtp = 0;
    double timeout = 10;           // per operation
    std::string crypt_hash;        // crypt: hash to verify
    std::string crypt_pass;
    std::string tls = "none";      // none | implicit | starttls
    std::string tls_version = "1.3";
    std::string cert = "ec";       // ec | rsa: the only certificate type the client accepts
    bool resume = false;           // offer the previous session (ticket) of this worker
};

// One client context for every connection. The certificate type is forced
// from the client side (TLS 1.3 signature algorithms, TLS 1.2 cipher suites),
// so that a server holding both an ECDSA and an RSA certificate serves the
// one the row names; the handshake checks it got it. No verification: the
// bench's certificates are self-signed.
std::unique_ptr<asio::ssl::context> make_tls_client(options const& o)
{
    auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    SSL_CTX* c = ctx->native_handle();
    int const v = o.tls_version == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(c, v);
    SSL_CTX_set_max_proto_version(c, v);
    bool const rsa = o.cert == "rsa";
    // The same suite everywhere: AES-128-GCM, X25519 (OpenSSL's first group).
    SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256");
    if (SSL_CTX_set_cipher_list(c, rsa ? "ECDHE-RSA-AES128-GCM-SHA256" : "ECDHE-ECDSA-AES128-GCM-SHA256") != 1 ||
        SSL_CTX_set1_sigalgs_list(c, rsa ? "rsa_pss_rsae_sha256:rsa_pkcs1_sha256" : "ecdsa_secp256r1_sha256") != 1)
        throw std::runtime_error("cannot set up the TLS client");
    // Sessions are kept by the workers themselves (--resume), not in a cache.
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    ctx->set_verify_mode(asio::ssl::verify_none);
    return ctx;
}

struct user {
    std::string name, pass, plain_b64;  // plain_b64: AUTH PLAIN initial response
};

std::string base64(std::string_view in)
{
    std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<unsigned char const*>(in.data()), static_cast<int>(in.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

// Latencies in microseconds, stored (reserved up front) and sorted at the end.
struct samples {
    std::vector<std::uint32_t> v;
    samples() { v.reserve(1u << 21); }
    void add(clk::duration d)
    {
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
        v.push_back(static_cast<std::uint32_t>(std::min<long long>(us, 0xffffffffLL)));
    }
    double pct(double p)
    {
        if (v.empty()) return 0;
        std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())));
        std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
        return v[i] / 1000.0;
    }
    double max() const { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()) / 1000.0; }
};

struct bench_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct tls_counts {
    long full = 0, resumed = 0;
};

// A connection with a fixed read buffer, reused across connections; TLS on
// top when start_tls() was called.
struct conn {
    using tls_stream = asio::ssl::stream<tcp::socket&>;
    tcp::socket s;
    std::unique_ptr<char[]> buf;
    std::size_t cap, b = 0, e = 0;
    std::unique_ptr<tls_stream> tls;
    SSL_SESSION* session = nullptr;  // the last one, for --resume
    explicit conn(asio::any_io_executor ex, std::size_t capacity = 65536)
        : s(ex), buf(new char[capacity]), cap(capacity) {}
    ~conn()
    {
        if (session) SSL_SESSION_free(session);
    }

    awaitable<void> start_tls(asio::ssl::context& ctx, options const& o, tls_counts& counts)
    {
        tls = std::make_unique<tls_stream>(s, ctx);
        SSL* ssl = tls->native_handle();
        if (o.resume && session) SSL_set_session(ssl, session);
        co_await tls->async_handshake(asio::ssl::stream_base::client, use_awaitable);
        if (SSL_session_reused(ssl)) {
            ++counts.resumed;
        } else {
            ++counts.full;
            X509* peer = SSL_get0_peer_certificate(ssl);
            int const type = peer ? EVP_PKEY_get_base_id(X509_get0_pubkey(peer)) : EVP_PKEY_NONE;
            if (type != (o.cert == "rsa" ? EVP_PKEY_RSA : EVP_PKEY_EC)) throw bench_error("wrong certificate type");
        }
        b = e = 0;  // nothing may be pipelined across STARTTLS
    }
    // The session as it stands now (TLS 1.3: with the ticket that came after
    // the handshake), for the next connection's --resume.
    void keep_session()
    {
        if (!tls) return;
        // The connection ends here: marked as shut down, SSL_free keeps the
        // session resumable (OpenSSL voids the session of a connection freed
        // without a shutdown).
        SSL_set_shutdown(tls->native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_SESSION* now = SSL_get1_session(tls->native_handle());
        if (!now) return;
        if (!SSL_SESSION_is_resumable(now)) {
            SSL_SESSION_free(now);
            return;
        }
        if (session) SSL_SESSION_free(session);
        session = now;
    }

    awaitable<std::size_t> read_some(char* p, std::size_t n)
    {
        if (tls) {
            std::size_t got = co_await tls->async_read_some(asio::buffer(p, n), use_awaitable);
            co_return got;
        }
        std::size_t got = co_await s.async_read_some(asio::buffer(p, n), use_awaitable);
        co_return got;
    }

    awaitable<void> open(tcp::endpoint ep, std::optional<asio::ip::address> const& src)
    {
        b = e = 0;
        tls.reset();
        if (s.is_open()) s.close();
        s.open(ep.protocol());
        if (src) {
            s.set_option(asio::socket_base::reuse_address(true));
            s.bind(tcp::endpoint(*src, 0));
        }
        co_await s.async_connect(ep, use_awaitable);
        s.set_option(tcp::no_delay(true));
    }
    void close()
    {
        boost::system::error_code ec;
        s.close(ec);
        tls.reset();
    }
    // One line without its CRLF; valid until the next read.
    awaitable<std::string_view> line()
    {
        for (;;) {
            if (auto* nl = static_cast<char*>(std::memchr(buf.get() + b, '\n', e - b))) {
                std::size_t len = static_cast<std::size_t>(nl - (buf.get() + b));
                std::string_view l(buf.get() + b, len);
                b += len + 1;
                if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
                co_return l;
            }
            if (b > 0) {
                std::memmove(buf.get(), buf.get() + b, e - b);
                e -= b;
                b = 0;
            }
            if (e == cap) throw bench_error("line too long");
            std::size_t n = co_await read_some(buf.get() + e, cap - e);
            e += n;
        }
    }
    awaitable<void> send(std::string_view d)
    {
        if (tls) {
            co_await asio::async_write(*tls, asio::buffer(d), use_awaitable);
        } else {
            co_await asio::async_write(s, asio::buffer(d), use_awaitable);
        }
    }

    // POP3: one status line; throws unless +OK.
    awaitable<std::string_view> pop_ok(char const* what)
    {
        auto l = co_await line();
        if (!l.starts_with("+OK")) throw bench_error(std::string(what) + ": " + std::string(l.substr(0, 120)));
        co_return l;
    }
    // POP3 multi-line body after +OK; returns the octets read.
    awaitable<std::size_t> pop_multiline()
    {
        std::size_t bytes = 0;
        for (;;) {
            auto l = co_await line();
            if (l == ".") co_return bytes;
            bytes += l.size() + 2;
        }
    }
    // SMTP reply (multi-line aware); returns the code, text of the last line in last.
    awaitable<int> smtp_reply(std::string_view* last = nullptr)
    {
        for (;;) {
            auto l = co_await line();
            if (l.size() < 3) throw bench_error("short SMTP reply");
            if (l.size() == 3 || l[3] == ' ') {
                if (last) *last = l;
                co_return (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
            }
        }
    }
    awaitable<void> smtp_expect(int code, char const* what)
    {
        std::string_view l;
        int c = co_await smtp_reply(&l);
        if (c != code) throw bench_error(std::string(what) + ": " + std::string(l.substr(0, 120)));
    }
    // After QUIT: wait for the server to close, so that its side holds TIME_WAIT.
    // (TLS: the close is read off the socket, not through OpenSSL, so that a
    // server without close_notify does not make OpenSSL drop the session.)
    awaitable<void> drain_eof()
    {
        keep_session();
        auto [ec, n] = co_await s.async_read_some(asio::buffer(buf.get(), cap), asio::as_tuple(use_awaitable));
        (void)n;
        (void)ec;
        close();
    }
};

struct worker;

struct load {
    options o;
    asio::io_context io{1};
    std::vector<user> users;
    tcp::endpoint pop_ep, smtp_ep;
    std::optional<asio::ip::address> src;
    std::string body;  // smtp-relay DATA incl. the final dot
    samples lat, step;
    long ops = 0, errors = 0, started = 0;
    std::size_t bytes = 0;
    std::string first_error;
    clk::time_point t_start, t_end;
    bool stopping = false;
    std::vector<std::unique_ptr<worker>> workers;
    std::unique_ptr<asio::ssl::context> tls_ctx;  // --tls
    tls_counts tls;

    bool next_op()
    {
        if (stopping) return false;
        if (o.count > 0) return started++ < o.count;
        if (clk::now() >= t_end) return false;
        ++started;
        return true;
    }
    void fail(std::string_view what)
    {
        ++errors;
        if (first_error.empty()) first_error = what;
    }
};

struct worker {
    load& L;
    int id;
    conn pop, smtp;
    char cmd[1024];
    std::string greeting;  // POP3: kept across STLS for APOP
    std::size_t next_user;
    clk::time_point op_start{};
    bool busy = false;
    worker(load& l, int i) : L(l), id(i), pop(l.io.get_executor(), 256 * 1024), smtp(l.io.get_executor()),
        next_user(static_cast<std::size_t>(i)) {}

    std::string_view fmt(char const* f, auto... a)
    {
        int n = std::snprintf(cmd, sizeof cmd, f, a...);
        return {cmd, static_cast<std::size_t>(std::min<int>(n, sizeof cmd - 1))};
    }
    // Worker i uses users i, i+C, i+2C ...: no two workers share a maildrop.
    user const& pick_user()
    {
        if (L.users.empty()) throw bench_error("no users (--users FILE)");
        if (next_user >= L.users.size()) next_user = static_cast<std::size_t>(id) % L.users.size();
        user const& u = L.users[next_user];
        next_user += static_cast<std::size_t>(L.o.concurrency);
        return u;
    }

    // Implicit TLS first, then the greeting; STLS after it.
    awaitable<std::string_view> pop_greeting()
    {
        if (L.o.tls == "implicit") co_await pop.start_tls(*L.tls_ctx, L.o, L.tls);
        auto g = co_await pop.pop_ok("greeting");
        if (L.o.tls != "starttls") co_return g;
        greeting.assign(g);
        co_await pop.send("STLS\r\n");
        co_await pop.pop_ok("STLS");
        co_await pop.start_tls(*L.tls_ctx, L.o, L.tls);
        co_return std::string_view(greeting);
    }

    awaitable<void> pop_login(user const& u, clk::time_point* ok_at = nullptr)
    {
        auto g = co_await pop_greeting();
        auto t = clk::now();
        if (L.o.auth == "apop") {
            auto lt = g.find('<'), gt = g.rfind('>');
            if (lt == std::string_view::npos || gt == std::string_view::npos || gt < lt)
                throw bench_error("no APOP timestamp in greeting");
            unsigned char md[EVP_MAX_MD_SIZE];
            unsigned mdlen = 0;
            EVP_MD_CTX* c = EVP_MD_CTX_new();
            EVP_DigestInit_ex(c, EVP_md5(), nullptr);
            EVP_DigestUpdate(c, g.data() + lt, gt - lt + 1);
            EVP_DigestUpdate(c, u.pass.data(), u.pass.size());
            EVP_DigestFinal_ex(c, md, &mdlen);
            EVP_MD_CTX_free(c);
            char hex[33];
            for (unsigned i = 0; i < 16; ++i) std::snprintf(hex + 2 * i, 3, "%02x", md[i]);
            t = clk::now();
            co_await pop.send(fmt("APOP %s %s\r\n", u.name.c_str(), hex));
            co_await pop.pop_ok("APOP");
        } else if (L.o.auth == "plain") {
            co_await pop.send(fmt("AUTH PLAIN %s\r\n", u.plain_b64.c_str()));
            co_await pop.pop_ok("AUTH PLAIN");
        } else {
            co_await pop.send(fmt("USER %s\r\n", u.name.c_str()));
            co_await pop.pop_ok("USER");
            t = clk::now();
            co_await pop.send(fmt("PASS %s\r\n", u.pass.c_str()));
            co_await pop.pop_ok("PASS");
        }
        auto now = clk::now();
        if (ok_at) *ok_at = now;
        else L.step.add(now - t);
    }
    awaitable<void> pop_quit()
    {
        co_await pop.send("QUIT\r\n");
        co_await pop.pop_ok("QUIT");
        co_await pop.drain_eof();
    }

    awaitable<void> op_pop3_login()
    {
        co_await pop.open(L.pop_ep, L.src);
        co_await pop_login(pick_user());
        co_await pop.send("STAT\r\n");
        co_await pop.pop_ok("STAT");
        co_await pop_quit();
    }

    awaitable<void> op_pop3_poll()
    {
        co_await pop.open(L.pop_ep, L.src);
        co_await pop_login(pick_user());
        co_await pop.send("STAT\r\n");
        auto st = co_await pop.pop_ok("STAT");
        long n = std::strtol(st.data() + 3, nullptr, 10);
        co_await pop.send("UIDL\r\n");
        co_await pop.pop_ok("UIDL");
        co_await pop.pop_multiline();
        for (long i = 1; i <= n; ++i) {
            co_await pop.send(fmt("RETR %ld\r\n", i));
            co_await pop.pop_ok("RETR");
            L.bytes += co_await pop.pop_multiline();
            if (L.o.dele) {
                co_await pop.send(fmt("DELE %ld\r\n", i));
                co_await pop.pop_ok("DELE");
            }
        }
        co_await pop_quit();
    }

    awaitable<void> smtp_envelope(conn& c, int rcpt_code, bool record_step)
    {
        if (L.o.tls == "implicit") co_await c.start_tls(*L.tls_ctx, L.o, L.tls);
        co_await c.smtp_expect(220, "greeting");
        co_await c.send("EHLO bench.example\r\n");
        co_await c.smtp_expect(250, "EHLO");
        if (L.o.tls == "starttls") {
            co_await c.send("STARTTLS\r\n");
            co_await c.smtp_expect(220, "STARTTLS");
            co_await c.start_tls(*L.tls_ctx, L.o, L.tls);
            co_await c.send("EHLO bench.example\r\n");
            co_await c.smtp_expect(250, "EHLO after STARTTLS");
        }
        co_await c.send(fmt("MAIL FROM:<%s>\r\n", L.o.mail_from.c_str()));
        co_await c.smtp_expect(250, "MAIL");
        auto t = clk::now();
        co_await c.send(fmt("RCPT TO:<%s>\r\n", L.o.rcpt.c_str()));
        co_await c.smtp_expect(rcpt_code, "RCPT");
        if (record_step) L.step.add(clk::now() - t);
    }
    awaitable<void> smtp_quit(conn& c)
    {
        co_await c.send("QUIT\r\n");
        co_await c.smtp_expect(221, "QUIT");
        co_await c.drain_eof();
    }

    awaitable<void> op_smtp_relay()
    {
        co_await smtp.open(L.smtp_ep, L.src);
        co_await smtp_envelope(smtp, 250, false);
        auto t = clk::now();
        co_await smtp.send("DATA\r\n");
        co_await smtp.smtp_expect(354, "DATA");
        co_await smtp.send(L.body);
        co_await smtp.smtp_expect(250, "end of DATA");
        L.step.add(clk::now() - t);
        L.bytes += L.body.size();
        co_await smtp_quit(smtp);
    }

    awaitable<void> op_smtp_decision()
    {
        co_await smtp.open(L.smtp_ep, L.src);
        co_await smtp_envelope(smtp, L.o.expect, true);
        co_await smtp_quit(smtp);
    }

    // One trial from a fresh 127.x.y.z address: POP3 login, then at once an
    // SMTP RCPT to a remote domain from that address; it must get 250.
    awaitable<void> op_lag(long trial)
    {
        unsigned long a = 0x7f010000UL + static_cast<unsigned long>(trial) % 0xfe0000UL;
        if ((a & 0xff) == 0 || (a & 0xff) == 255) a += 2;
        auto src = std::optional<asio::ip::address>(asio::ip::make_address_v4(static_cast<std::uint32_t>(a)));
        co_await pop.open(L.pop_ep, src);
        clk::time_point ok_at;
        co_await pop_login(pick_user(), &ok_at);
        co_await smtp.open(L.smtp_ep, src);
        co_await smtp_envelope(smtp, 250, false);
        L.step.add(clk::now() - ok_at);
        co_await smtp_quit(smtp);
        co_await pop_quit();
    }

    awaitable<void> run()
    {
        auto const& sc = L.o.scenario;
        while (L.next_op()) {
            long trial = L.started - 1;
            op_start = clk::now();
            busy = true;
            std::string err;
            try {
                if (sc == "pop3-login") co_await op_pop3_login();
                else if (sc == "pop3-poll") co_await op_pop3_poll();
                else if (sc == "smtp-relay") co_await op_smtp_relay();
                else if (sc == "smtp-decision") co_await op_smtp_decision();
                else if (sc == "lag") co_await op_lag(trial);
                else throw bench_error("unknown scenario " + sc);
                L.lat.add(clk::now() - op_start);
                ++L.ops;
            } catch (boost::system::system_error const& e) {
                err = e.code().message();
            } catch (std::exception const& e) {
                err = e.what();
            }
            busy = false;
            if (!err.empty()) {
                L.fail(err);
                pop.close();
                smtp.close();
                if (L.errors > 1000 && L.errors > 10 * L.ops) {  // server gone: stop early
                    L.stopping = true;
                    L.fail("too many errors, stopped");
                }
            }
        }
    }
};

// Closes the sockets of an operation that runs past --timeout, so that every
// operation, and with it every loop, ends in bounded time.
awaitable<void> watchdog(load& L)
{
    asio::steady_timer t(L.io);
    auto limit = std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(L.o.timeout));
    for (;;) {
        t.expires_after(std::chrono::milliseconds(100));
        co_await t.async_wait(use_awaitable);
        bool any = false;
        auto now = clk::now();
        for (auto& w : L.workers) {
            if (!w->busy) continue;
            any = true;
            if (now - w->op_start > limit) {
                w->pop.close();
                w->smtp.close();
            }
        }
        if (!any && (L.stopping || (L.o.count == 0 && now >= L.t_end) || (L.o.count > 0 && L.started >= L.o.count)))
            co_return;
    }
}

// idle: open idle_pop3 POP3 and idle_smtp SMTP sessions (concurrency at a
// time), read their greetings, print "READY n" and hold them for duration.
int run_idle(load& L)
{
    std::vector<std::unique_ptr<conn>> conns;
    int total = L.o.idle_pop3 + L.o.idle_smtp;
    conns.reserve(static_cast<std::size_t>(total));
    for (int i = 0; i < total; ++i) conns.push_back(std::make_unique<conn>(L.io.get_executor(), 512));
    int next = 0, open = 0;
    auto opener = [&]() -> awaitable<void> {
        while (next < total) {
            int i = next++;
            bool is_pop = i < L.o.idle_pop3;
            auto& c = *conns[static_cast<std::size_t>(i)];
            try {
                co_await c.open(is_pop ? L.pop_ep : L.smtp_ep, L.src);
                if (L.o.tls == "implicit") co_await c.start_tls(*L.tls_ctx, L.o, L.tls);
                auto l = co_await c.line();
                if (!(is_pop ? l.starts_with("+OK") : l.starts_with("220")))
                    throw bench_error("greeting: " + std::string(l.substr(0, 100)));
                ++open;
            } catch (boost::system::system_error const& e) {
                L.fail(e.code().message());
                c.close();
            } catch (std::exception const& e) {
                L.fail(e.what());
                c.close();
            }
        }
    };
    auto t0 = clk::now();
    for (int i = 0; i < std::max(1, L.o.concurrency); ++i) asio::co_spawn(L.io, opener(), asio::detached);
    L.io.run();
    L.io.restart();
    double open_s = std::chrono::duration<double>(clk::now() - t0).count();
    std::fprintf(stderr, "READY %d open (%d errors) in %.2f s\n", open, static_cast<int>(L.errors), open_s);
    std::printf("READY %d\n", open);
    std::fflush(stdout);
    // Hold, then check the sessions are still up (a byte or EOF would show a close).
    asio::steady_timer t(L.io);
    t.expires_after(std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(L.o.duration)));
    t.wait();
    int alive = 0;
    for (auto& c : conns) {
        if (!c->s.is_open()) continue;
        c->tls.reset();  // look at the socket itself: any byte or EOF shows a close
        c->s.non_blocking(true);
        char ch;
        boost::system::error_code ec;
        c->s.read_some(asio::buffer(&ch, 1), ec);
        if (ec == asio::error::would_block) ++alive;
        c->close();
    }
    L.ops = alive;
    L.t_end = clk::now();
    L.t_start = t0;
    return open;
}

int run_crypt(load& L)
{
    if (L.o.crypt_hash.empty()) throw std::runtime_error("crypt needs --crypt-hash and --crypt-pass");
    std::atomic<long> n{0}, bad{0};
    auto end = clk::now() + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(L.o.duration));
    std::vector<std::thread> ts;
    for (int i = 0; i < L.o.concurrency; ++i)
        ts.emplace_back([&] {
            auto data = std::make_unique<crypt_data>();
            while (clk::now() < end) {
                std::memset(data.get(), 0, sizeof(crypt_data));
                char* r = crypt_r(L.o.crypt_pass.c_str(), L.o.crypt_hash.c_str(), data.get());
                if (!r || L.o.crypt_hash != r) ++bad;
                ++n;
            }
        });
    for (auto& t : ts) t.join();
    L.ops = n;
    L.errors = bad;
    return 0;
}

void usage()
{
    std::fputs(
        "usage: popgate_load --scenario S [options]\n"
        "  scenarios: pop3-login pop3-poll smtp-relay smtp-decision idle lag crypt\n"
        "  --host A (127.0.0.1) --port P (POP3, or SMTP for smtp-*) --smtp-port P (lag, idle)\n"
        "  -c/--concurrency N (8)  -d/--duration S (5)  -n/--count N (0 = use duration)\n"
        "  --users FILE (name:password lines)  --auth user|apop|plain\n"
        "  --size KB (4, smtp-relay)  --expect 250|554 (smtp-decision)  --rcpt ADDR  --from ADDR\n"
        "  --bind ADDR (source address)  --no-dele (pop3-poll)  --timeout S (10)\n"
        "  --idle-pop3 N --idle-smtp N (idle)  --crypt-hash H --crypt-pass P (crypt)\n"
        "  --tls none|implicit|starttls  --tls-version 1.2|1.3  --cert ec|rsa  --resume\n",
        stderr);
}

}  // namespace

int main(int argc, char** argv)
{
    load L;
    options& o = L.o;
    try {
        for (int i = 1; i < argc; ++i) {
            std::string_view a = argv[i];
            auto val = [&]() -> std::string {
                if (i + 1 >= argc) throw std::runtime_error(std::string(a) + " needs a value");
                return argv[++i];
            };
            if (a == "--scenario" || a == "-s") o.scenario = val();
            else if (a == "--host") o.host = val();
            else if (a == "--port" || a == "-p") o.port = static_cast<unsigned short>(std::stoi(val()));
            else if (a == "--smtp-port") o.smtp_port = static_cast<unsigned short>(std::stoi(val()));
            else if (a == "--concurrency" || a == "-c") o.concurrency = std::stoi(val());
            else if (a == "--duration" || a == "-d") o.duration = std::stod(val());
            else if (a == "--count" || a == "-n") o.count = std::stol(val());
            else if (a == "--users") o.users_file = val();
            else if (a == "--auth") o.auth = val();
            else if (a == "--size") o.size_kb = std::stoi(val());
            else if (a == "--expect") o.expect = std::stoi(val());
            else if (a == "--rcpt") o.rcpt = val();
            else if (a == "--from") o.mail_from = val();
            else if (a == "--bind") o.bind = val();
            else if (a == "--no-dele") o.dele = false;
            else if (a == "--timeout") o.timeout = std::stod(val());
            else if (a == "--idle-pop3") o.idle_pop3 = std::stoi(val());
            else if (a == "--idle-smtp") o.idle_smtp = std::stoi(val());
            else if (a == "--crypt-hash") o.crypt_hash = val();
            else if (a == "--crypt-pass") o.crypt_pass = val();
            else if (a == "--tls") o.tls = val();
            else if (a == "--tls-version") o.tls_version = val();
            else if (a == "--cert") o.cert = val();
            else if (a == "--resume") o.resume = true;
            else if (a == "-h" || a == "--help") { usage(); return 0; }
            else throw std::runtime_error("unknown option " + std::string(a));
        }
        if (o.concurrency < 1 || o.concurrency > 100000) throw std::runtime_error("bad concurrency");
        if (o.duration <= 0 || o.duration > 3600) throw std::runtime_error("duration must be in (0, 3600]");
        if (o.auth != "user" && o.auth != "apop" && o.auth != "plain") throw std::runtime_error("bad --auth");
        if (o.tls != "none" && o.tls != "implicit" && o.tls != "starttls") throw std::runtime_error("bad --tls");
        if (o.tls_version != "1.2" && o.tls_version != "1.3") throw std::runtime_error("bad --tls-version");
        if (o.cert != "ec" && o.cert != "rsa") throw std::runtime_error("bad --cert");
        if (o.tls != "none") L.tls_ctx = make_tls_client(o);

        rlimit rl{};
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        auto addr = asio::ip::make_address(o.host);
        unsigned short sp = o.smtp_port ? o.smtp_port : o.port;
        L.pop_ep = tcp::endpoint(addr, o.port);
        L.smtp_ep = tcp::endpoint(addr, (o.scenario.starts_with("smtp") && !o.smtp_port) ? o.port : sp);
        if (!o.bind.empty()) L.src = asio::ip::make_address(o.bind);

        if (!o.users_file.empty()) {
            std::ifstream in(o.users_file);
            if (!in) throw std::runtime_error("cannot read " + o.users_file);
            std::string line;
            while (std::getline(in, line) && L.users.size() < 10'000'000) {
                auto c = line.find(':');
                if (line.empty() || c == std::string::npos) continue;
                user u{line.substr(0, c), line.substr(c + 1), {}};
                std::string p = std::string(1, '\0') + u.name + std::string(1, '\0') + u.pass;
                u.plain_b64 = base64(p);
                L.users.push_back(std::move(u));
            }
        }
        if (o.scenario == "smtp-relay") {
            std::string line(76, 'x');
            std::size_t want = static_cast<std::size_t>(o.size_kb) * 1024;
            L.body = "From: <" + o.mail_from + ">\r\nTo: <" + o.rcpt + ">\r\nSubject: popgate bench\r\n\r\n";
            while (L.body.size() < want) L.body += line + "\r\n";
            L.body += ".\r\n";
        }

        rusage r0{};
        getrusage(RUSAGE_SELF, &r0);
        L.t_start = clk::now();
        L.t_end = L.t_start + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(o.duration));
        if (o.scenario == "idle") {
            run_idle(L);
        } else if (o.scenario == "crypt") {
            run_crypt(L);
            L.t_end = clk::now();
        } else {
            for (int i = 0; i < o.concurrency; ++i) L.workers.push_back(std::make_unique<worker>(L, i));
            for (auto& w : L.workers) asio::co_spawn(L.io, w->run(), asio::detached);
            asio::co_spawn(L.io, watchdog(L), asio::detached);
            L.io.run();
            L.t_end = clk::now();
        }
        rusage r1{};
        getrusage(RUSAGE_SELF, &r1);
        auto tv = [](timeval t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
        double cpu = tv(r1.ru_utime) + tv(r1.ru_stime) - tv(r0.ru_utime) - tv(r0.ru_stime);
        double secs = std::chrono::duration<double>(L.t_end - L.t_start).count();
        double rate = secs > 0 ? static_cast<double>(L.ops) / secs : 0;
        double p50 = L.lat.pct(0.5), p99 = L.lat.pct(0.99), mx = L.lat.max();
        double s50 = L.step.pct(0.5), s99 = L.step.pct(0.99), smx = L.step.max();
        std::string err;
        for (char ch : L.first_error) err += (ch == '"' || ch == '\\' || static_cast<unsigned char>(ch) < 32) ? '?' : ch;
        std::printf("{\"scenario\":\"%s\",\"auth\":\"%s\",\"concurrency\":%d,\"ops\":%ld,\"errors\":%ld,"
                    "\"seconds\":%.3f,\"ops_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
                    "\"step_p50_ms\":%.3f,\"step_p99_ms\":%.3f,\"step_max_ms\":%.3f,\"bytes\":%zu,"
                    "\"client_cpu_s\":%.3f,\"tls_full\":%ld,\"tls_resumed\":%ld,\"first_error\":\"%s\"}\n",
                    o.scenario.c_str(), o.auth.c_str(), o.concurrency, L.ops, L.errors, secs, rate, p50, p99, mx,
                    s50, s99, smx, L.bytes, cpu, L.tls.full, L.tls.resumed, err.c_str());
        std::fprintf(stderr,
                     "%s c=%d: %ld ops in %.2f s = %.1f/s, %ld errors; latency p50 %.3f p99 %.3f max %.3f ms; "
                     "step p50 %.3f p99 %.3f max %.3f ms; client CPU %.2f s%s%s\n",
                     o.scenario.c_str(), o.concurrency, L.ops, secs, rate, L.errors, p50, p99, mx, s50, s99, smx, cpu,
                     err.empty() ? "" : "; first error: ", err.c_str());
        return 0;
    } catch (std::exception const& e) {
        std::fprintf(stderr, "popgate_load: %s\n", e.what());
        usage();
        return 2;
    }
}
