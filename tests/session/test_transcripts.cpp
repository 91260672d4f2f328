// The session transcripts (tests/session/transcripts/*.t, format in
// tests/session/README.md) replayed against the POP3 and SMTP sessions over
// an in-memory stream: no sockets, no frame, the daemon's own wiring
// (daemon::context) over a fresh database and Maildirs. Each file runs as
// written and byte by byte (unless it says @whole-only), and must give the
// same server lines both ways; integration.test_transcripts replays the
// same files against the running daemon.
#include "popgate/auth/password.hpp"
#include "popgate/daemon/context.hpp"
#include "popgate/mail/maildir.hpp"
#include "popgate/proto/sasl.hpp"
#include "popgate/store/sqlite_store.hpp"

#include "memory_stream.hpp"
#include "temp_dir.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>
#include <vector>

using namespace popgate;
namespace fs = std::filesystem;
namespace asio = boost::asio;

namespace {

fs::path const transcript_dir = fs::path(POPGATE_SOURCE_DIR) / "tests" / "session" / "transcripts";

// ------------------------------------------------------------------ the file

struct script_line {
    std::string kind;  // "C:", "C<", "C!", "S:", "S~", "=closed"
    std::string text;
    std::size_t line_no = 0;
};

struct user_spec {
    std::string name, password;
    bool shared = false, apop_only = false;
};

struct transcript {
    std::string protocol;
    bool whole_only = false;
    std::string tls = "none";
    std::vector<std::pair<std::string, std::string>> listener;  // other @listener keys, as written
    std::vector<std::pair<std::string, std::string>> config;  // "section.key", raw TOML value
    std::vector<user_spec> users;
    struct message {
        std::string user, file, body;
    };
    std::vector<message> messages;
    std::vector<script_line> script;
};

std::vector<std::string> words(std::string const& s)
{
    std::istringstream in(s);
    std::vector<std::string> out;
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

transcript parse_file(fs::path const& p)
{
    std::ifstream in(p);
    BOOST_TEST_REQUIRE(in.good(), "cannot read " << p);
    transcript t;
    std::string line;
    std::size_t no = 0;
    while (std::getline(in, line)) {
        ++no;
        if (line.empty() || line[0] == '#') continue;
        if (line[0] == '@') {
            auto const w = words(line);
            if (w[0] == "@protocol") t.protocol = w.at(1);
            else if (w[0] == "@whole-only") t.whole_only = true;
            else if (w[0] == "@listener") {
                for (std::size_t i = 1; i < w.size(); ++i) {
                    auto const eq = w[i].find('=');
                    auto const k = w[i].substr(0, eq), v = w[i].substr(eq + 1);
                    if (k == "tls") t.tls = v;
                    else t.listener.emplace_back(k, v);
                }
            } else if (w[0] == "@config") {
                auto const rest = line.substr(std::string("@config ").size());
                auto const eq = rest.find('=');
                auto key = rest.substr(0, eq);
                key.erase(key.find_last_not_of(' ') + 1);
                auto value = rest.substr(eq + 1);
                value.erase(0, value.find_first_not_of(' '));
                t.config.emplace_back(key, value);
            } else if (w[0] == "@user") {
                user_spec u{w.at(1), w.at(2)};
                for (std::size_t i = 3; i < w.size(); ++i) {
                    if (w[i] == "shared") u.shared = true;
                    if (w[i] == "apop-only") u.apop_only = u.shared = true;
                }
                t.users.push_back(u);
            } else if (w[0] == "@message") {
                transcript::message m{w.at(1), w.at(2), {}};
                while (std::getline(in, line) && line != "@end") {
                    ++no;
                    m.body += line + "\n";
                }
                ++no;
                t.messages.push_back(m);
            } else {
                BOOST_FAIL(p.filename() << ":" << no << ": unknown directive " << w[0]);
            }
            continue;
        }
        if (line == "=closed") {
            t.script.push_back({"=closed", "", no});
            continue;
        }
        BOOST_TEST_REQUIRE(line.size() >= 2, p.filename() << ":" << no << ": bad line");
        auto const kind = line.substr(0, 2);
        auto text = line.size() > 3 ? line.substr(3) : std::string();
        t.script.push_back({kind, text, no});
    }
    return t;
}

// `C<` escapes: \r \n \\ \xHH.
std::string unescape(std::string const& s)
{
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\') {
            out += s[i];
            continue;
        }
        char const c = s.at(++i);
        if (c == 'r') out += '\r';
        else if (c == 'n') out += '\n';
        else if (c == '\\') out += '\\';
        else if (c == 'x') {
            out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
            i += 2;
        } else BOOST_FAIL("bad escape in C< line: " << s);
    }
    return out;
}

// ------------------------------------------------------------------ the setup

std::string toml(transcript const& t, fs::path const& root)
{
    std::map<std::string, std::map<std::string, std::string>> sec;
    auto q = [](fs::path const& p) { return "\"" + p.string() + "\""; };
    sec["server"]["hostname"] = "\"gw.test\"";
    sec["storage"]["database"] = q(root / "popgate.db");
    sec["mail"]["maildir"] = q(root / "mail" / "%u");
    sec["mail"]["local_domains"] = "[\"gw.test\", \"localhost\"]";
    sec["mail"]["relay_drop"] = q(root / "relay-drop");
    sec["auth"]["plaintext"] = "\"always\"";
    sec["auth"]["apop"] = "true";
    sec["auth"]["cram_md5"] = "true";
    sec["auth"]["failure_delay_ms"] = "0";
    sec["auth"]["failure_delay_max_ms"] = "0";
    for (auto const& [key, value] : t.config) {
        auto const dot = key.find('.');
        sec[key.substr(0, dot)][key.substr(dot + 1)] = value;
    }
    std::string out;
    for (auto const& [name, kv] : sec) {
        out += "[" + name + "]\n";
        for (auto const& [k, v] : kv) out += k + " = " + v + "\n";
    }
    out += "[[listener]]\nname = \"test\"\nprotocol = \"" + t.protocol + "\"\naddress = \"127.0.0.1\"\nport = 0\n";
    out += "tls = \"" + t.tls + "\"\n";
    for (auto const& [k, v] : t.listener)
        out += k + " = " + (v == "yes" ? "true" : v == "no" ? "false" : "\"" + v + "\"") + "\n";
    return out;
}

// ------------------------------------------------------------------ the replay

class replay {
public:
    replay(transcript const& t, bool bytewise) : t_(t), bytewise_(bytewise)
    {
        auto r = config::parse(toml(t, tmp_.path));
        BOOST_TEST_REQUIRE(r.errors.empty(), config::format_errors(r, "transcript config"));
        settings_ = std::make_shared<config::settings const>(std::move(*r.value));
        auto db = store::open_sqlite_store(settings_->database);
        for (auto const& u : t.users) {
            store::user_record rec;
            rec.name = u.name;
            rec.password_hash = auth::hash_password(u.password, auth::hash_scheme::sha512_crypt);
            if (u.shared) rec.shared_secret = u.password;
            rec.apop_only = u.apop_only;
            db->add_user(rec);
        }
        for (auto const& m : t.messages) {
            auto const dir = mail::user_maildir(settings_->maildir, m.user);
            mail::maildir(dir).ensure();
            std::ofstream(dir / "tmp" / m.file) << m.body;
            fs::rename(dir / "tmp" / m.file, dir / "new" / m.file);
        }
        ctx_.emplace(settings_, std::move(db), 2);
        stream_.emplace(t.tls == "starttls" || t.tls == "required", t.tls == "implicit");
        conn_.emplace(server::connection{"transcript", *net::parse_ip("127.0.0.1"), "127.0.0.1",
                                         settings_->listeners.front(), settings_, *stream_, clock_});
        auto* p = ctx_->protocol(t.protocol);
        BOOST_TEST_REQUIRE(p != nullptr);
        session_ = p->open(*conn_);
        asio::co_spawn(io_, session_->run(), [this](std::exception_ptr ep) {
            done_ = true;
            error_ = ep;
        });
        settle();  // the greeting
    }

    ~replay()
    {
        // As the daemon does: pool jobs and the writer finish while the
        // io_context still exists, then the session, then the services.
        stream_->close();
        settle();
        ctx_->blocking().join();
        ctx_->writes().stop();
        session_.reset();
    }

    void run()
    {
        auto const& s = t_.script;
        for (std::size_t i = 0; i < s.size(); ++i) {
            auto const& l = s[i];
            if (l.kind == "C:" || l.kind == "C<" || (l.kind == "C!" && l.text != "starttls")) {
                std::string group;
                for (; i < s.size() && is_send(s[i]); ++i) group += bytes_of(s[i]);
                --i;
                expect_no_more(l);
                send(group);
            } else if (l.kind == "C!") {
                expect_no_more(l);  // the pretend handshake happened with the session's +OK / 220
            } else if (l.kind == "S:" || l.kind == "S~") {
                auto const got = next_line(l);
                if (!got) return;
                if (greeting_.empty()) greeting_ = *got;
                last_lines_.push_back(*got);
                bool const ok = l.kind == "S:" ? *got == l.text : std::regex_match(*got, std::regex(l.text));
                BOOST_TEST(ok, where(l) << "expected " << (l.kind == "S:" ? "" : "~ ") << "'" << l.text << "', got '"
                                        << *got << "'");
                if (!ok) return;
            } else if (l.kind == "=closed") {
                settle();
                BOOST_TEST(done_, where(l) << "the session did not end");
                expect_no_more(l);
            }
        }
        BOOST_TEST(!error_, "the session ended with an exception");
    }

private:
    static bool is_send(script_line const& l)
    {
        return l.kind == "C:" || l.kind == "C<" || (l.kind == "C!" && l.text != "starttls");
    }

    std::string where(script_line const& l) const
    {
        return t_.protocol + " " + (bytewise_ ? "byte by byte" : "as written") + " line " + std::to_string(l.line_no) +
               ": ";
    }

    std::string bytes_of(script_line const& l)
    {
        if (l.kind == "C:") return l.text + "\r\n";
        if (l.kind == "C<") return unescape(l.text);
        auto const w = words(l.text);
        if (w.at(0) == "apop") {
            auto const a = greeting_.find('<'), b = greeting_.find('>', a);
            return "APOP " + w.at(1) + " " + auth::apop_digest(greeting_.substr(a, b - a + 1), w.at(2)) + "\r\n";
        }
        // cram: the latest challenge line
        for (auto it = last_lines_.rbegin(); it != last_lines_.rend(); ++it) {
            std::string b64;
            if (it->rfind("+ ", 0) == 0) b64 = it->substr(2);
            else if (it->rfind("334 ", 0) == 0) b64 = it->substr(4);
            else continue;
            auto const challenge = proto::base64_decode(b64);
            BOOST_TEST_REQUIRE(challenge.has_value());
            return proto::base64_encode(w.at(1) + " " + auth::cram_md5_digest(*challenge, w.at(2))) + "\r\n";
        }
        BOOST_FAIL("C! cram without a challenge");
        return {};
    }

    void send(std::string const& bytes)
    {
        if (!bytewise_) {
            stream_->feed(bytes);
            settle();
            return;
        }
        for (char c : bytes) {
            stream_->feed(std::string_view(&c, 1));
            settle();
        }
    }

    // Runs the session until it waits for the client again or has ended
    // (pool jobs and the writer thread complete on their own time).
    void settle()
    {
        auto const until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        for (;;) {
            if (io_.stopped()) io_.restart();
            auto const n = io_.poll();
            if (done_ || (stream_->waiting() && n == 0)) return;
            if (std::chrono::steady_clock::now() > until) BOOST_FAIL("the session neither answered nor waited in 20 s");
            if (n == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    }

    std::optional<std::string> next_line(script_line const& l)
    {
        auto& out = stream_->output();
        auto const end = out.find("\r\n", consumed_);
        if (end == std::string::npos) {
            BOOST_TEST(false, where(l) << "expected '" << l.text << "', got nothing"
                                       << (out.size() > consumed_ ? " but '" + out.substr(consumed_) + "'" : ""));
            return std::nullopt;
        }
        std::string line = out.substr(consumed_, end - consumed_);
        consumed_ = end + 2;
        return line;
    }

    void expect_no_more(script_line const& l)
    {
        auto const& out = stream_->output();
        BOOST_TEST(out.size() == consumed_, where(l) << "unexpected server output '" << out.substr(consumed_) << "'");
        consumed_ = out.size();
    }

    transcript const& t_;
    bool bytewise_;
    test::temp_dir tmp_{"transcript"};
    std::shared_ptr<config::settings const> settings_;
    std::optional<daemon::context> ctx_;
    asio::io_context io_;
    std::optional<test::memory_stream> stream_;
    io::session_clock clock_;
    std::optional<server::connection> conn_;
    std::unique_ptr<server::session> session_;
    bool done_ = false;
    std::exception_ptr error_;
    std::size_t consumed_ = 0;
    std::string greeting_;
    std::vector<std::string> last_lines_;
};

struct replay_case {
    fs::path file;
    bool bytewise;
};
std::ostream& operator<<(std::ostream& os, replay_case const& c)
{
    return os << c.file.filename().string() << (c.bytewise ? " byte by byte" : " as written");
}

std::vector<replay_case> all_cases()
{
    std::vector<fs::path> files;
    for (auto const& e : fs::directory_iterator(transcript_dir))
        if (e.path().extension() == ".t") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    std::vector<replay_case> out;
    for (auto const& f : files) {
        out.push_back({f, false});
        out.push_back({f, true});
    }
    return out;
}

struct quiet_logs {
    quiet_logs() { spdlog::set_level(spdlog::level::off); }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(session_transcripts, *boost::unit_test::label("session"))

BOOST_AUTO_TEST_CASE(there_are_transcripts_of_both_protocols)
{
    auto const cases = all_cases();
    auto const count = [&](std::string const& prefix) {
        return std::count_if(cases.begin(), cases.end(),
                             [&](auto const& c) { return c.file.filename().string().rfind(prefix, 0) == 0; });
    };
    BOOST_TEST(count("pop3_") >= 20);
    BOOST_TEST(count("smtp_") >= 20);
}

BOOST_DATA_TEST_CASE(replays, boost::unit_test::data::make(all_cases()), c)
{
    static quiet_logs const quiet;
    auto const t = parse_file(c.file);
    if (c.bytewise && t.whole_only) {
        BOOST_TEST_MESSAGE(c << ": @whole-only, replayed as written only");
        BOOST_TEST(t.whole_only);
        return;
    }
    BOOST_TEST_REQUIRE((t.protocol == "pop3" || t.protocol == "smtp"));
    replay r(t, c.bytewise);
    r.run();
}

BOOST_AUTO_TEST_SUITE_END()
