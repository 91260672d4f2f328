#include "popgate/proto/pop3.hpp"

#include <algorithm>

#include <array>
#include <cstring>

namespace popgate::proto {
namespace {

using enum pop3_phase;
constexpr unsigned both = phase_bits(authorization) | phase_bits(transaction);

// RFC 1939 §3: keywords are three or four characters. In pop3_verb order.
// Phases: RFC 1939 §4-§7; CAPA anywhere (RFC 2449); STLS and AUTH only before
// login (RFC 2595 §4, RFC 5034 §4). Junk: loops forever without effect
// (NOOP, RSET, CAPA), so endless runs of it are cut off
// (limits.max_junk_commands). Every command that reads the maildrop (STAT,
// LIST, UIDL, TOP, RETR) or changes it (DELE) is progress and resets that
// count: a client that polls with NOOP/STAT pairs is served, as by Dovecot.
// Secret: PASS, APOP (the digest replays) and AUTH (RFC 5034 initial
// response) arguments are never logged. Pre-TLS:
// all a listener with tls = "required" serves before STLS (RFC 2595 §4
// leaves the policy to the server; this is Dovecot's with ssl = required).
constexpr std::array<pop3_command_spec, 15> verbs{{
    //  keyword verb               phases                      junk   progress secret pre_tls
    {"USER", pop3_verb::user, phase_bits(authorization), false, false, false, false},
    {"PASS", pop3_verb::pass, phase_bits(authorization), false, false, true, false},
    {"APOP", pop3_verb::apop, phase_bits(authorization), false, false, true, false},
    {"AUTH", pop3_verb::auth, phase_bits(authorization), false, false, true, false},
    {"STAT", pop3_verb::stat, phase_bits(transaction), false, true, false, false},
    {"LIST", pop3_verb::list, phase_bits(transaction), false, true, false, false},
    {"UIDL", pop3_verb::uidl, phase_bits(transaction), false, true, false, false},
    {"TOP", pop3_verb::top, phase_bits(transaction), false, true, false, false},
    {"RETR", pop3_verb::retr, phase_bits(transaction), false, true, false, false},
    {"DELE", pop3_verb::dele, phase_bits(transaction), false, true, false, false},
    {"RSET", pop3_verb::rset, phase_bits(transaction), true, false, false, false},
    {"NOOP", pop3_verb::noop, phase_bits(transaction), true, false, false, false},
    {"QUIT", pop3_verb::quit, both, false, false, false, true},
    {"CAPA", pop3_verb::capa, both, true, false, false, true},
    {"STLS", pop3_verb::stls, phase_bits(authorization), false, false, false, true},
}};

constexpr bool table_in_verb_order() noexcept
{
    for (std::size_t i = 0; i < verbs.size(); ++i)
        if (static_cast<std::size_t>(verbs[i].verb) != i) return false;
    return true;
}
static_assert(table_in_verb_order(), "the POP3 command table must follow pop3_verb order");

constexpr char ascii_upper(char c) noexcept
{
    return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}

std::optional<pop3_verb> lookup_verb(std::string_view word) noexcept
{
    if (word.size() < 3 || word.size() > 4) return std::nullopt;
    std::array<char, 4> up{};
    for (std::size_t i = 0; i < word.size(); ++i) up[i] = ascii_upper(word[i]);
    std::string_view const key{up.data(), word.size()};
    for (auto const& e : verbs)
        if (e.keyword == key) return e.verb;
    return std::nullopt;
}

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

constexpr bool is_hex(char c) noexcept
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Decimal digits only, value <= max. Leading zeros are harmless and accepted.
result<std::uint32_t> parse_decimal(std::string_view s, std::uint64_t max) noexcept
{
    if (s.empty()) return errc::bad_number;
    std::uint64_t v = 0;
    for (char const c : s) {
        if (!is_digit(c)) return errc::bad_number;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
        if (v > max) return errc::bad_number;   // stop before the uint64 could overflow
    }
    return static_cast<std::uint32_t>(v);
}

// Allowed inside an APOP timestamp besides the single '@'.
constexpr bool timestamp_char(char c) noexcept
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '.' || c == '_' ||
           c == '-';
}

std::string reply(std::string_view status, std::string_view text)
{
    std::string out;
    out.reserve(status.size() + text.size() + 3);
    out += status;
    if (!text.empty()) {
        out += ' ';
        for (char const c : text) out += (c == '\r' || c == '\n' || c == '\0') ? ' ' : c;
    }
    out += "\r\n";
    return out;
}

}  // namespace

std::string_view pop3_keyword_of(std::string_view line) noexcept
{
    auto const v = lookup_verb(line.substr(0, line.find_first_of(" \t\r\n")));
    return v ? spec_for(*v).keyword : std::string_view{};
}

pop3_command_spec const& spec_for(pop3_verb v) noexcept
{
    return verbs[static_cast<std::size_t>(v)];
}

std::string_view to_string(pop3_verb v) noexcept
{
    return spec_for(v).keyword;
}

result<pop3_command> parse_pop3(std::string_view line, std::size_t max_line) noexcept
{
    // Length first so an oversized line costs no further work.
    if (line.size() + 2 > max_line) return errc::line_too_long;
    if (line.empty()) return errc::empty_line;
    if (line.find('\0') != line.npos) return errc::nul_byte;
    // The line reader splits on CRLF; a CR or LF left inside is not a command.
    if (line.find_first_of("\r\n") != line.npos) return errc::bare_cr_or_lf;

    auto const sp = line.find(' ');
    auto const verb = lookup_verb(line.substr(0, sp));
    if (!verb) return errc::unknown_command;
    return pop3_command{*verb, sp == line.npos ? std::string_view{} : line.substr(sp + 1)};
}

bool pop3_secret_args(pop3_verb v) noexcept
{
    return spec_for(v).secret_args;
}

result<std::uint32_t> parse_msg_number(std::string_view s) noexcept
{
    // Message numbers start at 1 (RFC 1939 §5); 2^31-1 keeps them within a
    // signed 32-bit int as many clients store them.
    auto r = parse_decimal(s, 0x7fff'ffffu);
    if (!r) return r;
    if (*r == 0) return errc::bad_number;
    return r;
}

result<std::pair<std::uint32_t, std::uint32_t>> parse_top_args(std::string_view s) noexcept
{
    // RFC 1939 §7: "TOP msg n", both required, single SP between them.
    auto const sp = s.find(' ');
    if (sp == s.npos) return errc::bad_arguments;
    auto msg = parse_msg_number(s.substr(0, sp));
    if (!msg) return msg.error();
    // Any count of lines past the last is the whole body, as Dovecot reads
    // it: a client asking for "all" with 2^32 or 10^12 is served, not
    // refused. Digits only, at least one.
    auto const count = s.substr(sp + 1);
    if (count.empty() || !std::all_of(count.begin(), count.end(), is_digit)) return errc::bad_number;
    auto lines = parse_decimal(count, 0xffff'ffffu);
    return std::pair{*msg, lines ? *lines : 0xffff'ffffu};
}

result<std::pair<std::string_view, std::string_view>> parse_apop_args(std::string_view s) noexcept
{
    // RFC 1939 §7: "APOP name digest"; the name cannot contain SP.
    auto const sp = s.find(' ');
    if (sp == 0 || sp == s.npos) return errc::bad_arguments;
    auto const name = s.substr(0, sp);
    auto const digest = s.substr(sp + 1);
    if (digest.size() != apop_digest_hex_len) return errc::bad_arguments;
    for (char const c : digest)
        if (!is_hex(c)) return errc::bad_arguments;
    return std::pair{name, digest};
}

std::string pop3_ok(std::string_view text) { return reply("+OK", text); }

std::string pop3_err(std::string_view text) { return reply("-ERR", text); }

std::string make_apop_timestamp(std::uint64_t pid, std::uint64_t unix_time, std::uint64_t random,
                                std::string_view host)
{
    static constexpr char hex[] = "0123456789abcdef";
    std::string out = "<";
    out += std::to_string(pid);
    out += '.';
    out += std::to_string(unix_time);
    out += '.';
    // Fixed 16 digits: the timestamp length does not leak anything about the value.
    for (int shift = 60; shift >= 0; shift -= 4) out += hex[(random >> shift) & 0xf];
    out += '@';
    // RFC 1939 §3 caps a response line at 512 octets; a sane host is far shorter.
    if (host.size() > 255) host = host.substr(0, 255);
    if (host.empty()) host = "localhost";
    for (char const c : host) out += timestamp_char(c) ? c : '-';
    out += '>';
    return out;
}

pop3_stuffer::pop3_stuffer(std::optional<std::uint32_t> body_lines) noexcept : body_lines_{body_lines} {}

void pop3_stuffer::end_line(std::string& out)
{
    bool const empty = at_line_start_;
    out += "\r\n";
    at_line_start_ = true;
    if (!body_lines_) return;
    // RFC 1939 §7: headers, the blank separator line, then n body lines.
    if (in_header_) {
        if (empty) {
            in_header_ = false;
            if (*body_lines_ == 0) done_ = true;
        }
    } else if (++body_sent_ >= *body_lines_) {
        done_ = true;
    }
}

void pop3_stuffer::feed(std::string_view raw, std::string& out)
{
    std::size_t i = 0;
    while (i < raw.size() && !done_) {
        if (pending_cr_) {
            pending_cr_ = false;
            if (raw[i] == '\n') {
                ++i;
                end_line(out);
                continue;
            }
            // A CR not followed by LF is content (and cannot start a '.' line).
            out += '\r';
            at_line_start_ = false;
        }
        char const c = raw[i];
        if (c == '\n') {
            ++i;
            end_line(out);
            continue;
        }
        if (c == '\r') {
            ++i;
            pending_cr_ = true;   // decided by the next byte, maybe in the next chunk
            continue;
        }
        if (at_line_start_) {
            if (c == '.') out += '.';   // RFC 1939 §3 byte-stuffing
            at_line_start_ = false;
        }
        // Copy the run of ordinary bytes in one go.
        auto const stop = raw.find_first_of("\r\n", i);
        auto const end = stop == raw.npos ? raw.size() : stop;
        out.append(raw.data() + i, end - i);
        i = end;
    }
}

void pop3_stuffer::finish(std::string& out)
{
    if (finished_) return;
    finished_ = true;
    if (!done_) {
        if (pending_cr_) {
            // A CR at the very end of the message is content like any bare CR.
            out += '\r';
            at_line_start_ = false;
            pending_cr_ = false;
        }
        if (!at_line_start_) out += "\r\n";   // the terminator must start a line
    }
    out += ".\r\n";
    done_ = true;
}

void crlf_counter::feed(std::string_view data) noexcept
{
    size_ += data.size();
    for (char const c : data) {
        // A LF without its CR gains one octet on the wire.
        if (c == '\n' && !prev_cr_) ++size_;
        prev_cr_ = c == '\r';
    }
}

}  // namespace popgate::proto
