#include "popgate/proto/smtp.hpp"

#include "popgate/proto/ascii.hpp"

#include <algorithm>
#include <stdexcept>

namespace popgate::proto {
namespace {

constexpr bool is_alpha(char c) noexcept
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_alnum(char c) noexcept { return is_alpha(c) || is_digit(c); }
constexpr bool is_hex(char c) noexcept
{
    return is_digit(c) || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}
// RFC 5322 §3.2.3 atext (RFC 5321 §4.1.2 Atom). No UTF-8: we do not offer SMTPUTF8.
constexpr bool is_atext(char c) noexcept
{
    if (is_alnum(c)) return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '/': case '=': case '?': case '^': case '_': case '`': case '{':
    case '|': case '}': case '~':
        return true;
    default:
        return false;
    }
}

// RFC 5321 §4.1.2 Dot-string = Atom *("." Atom)
bool is_dot_string(std::string_view s) noexcept
{
    if (s.empty() || s.front() == '.' || s.back() == '.') return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '.') {
            if (s[i + 1] == '.') return false;  // back() is not '.', so i + 1 is valid
        } else if (!is_atext(s[i])) {
            return false;
        }
    }
    return true;
}

// RFC 5321 §4.1.2 Domain = sub-domain *("." sub-domain),
// sub-domain = Let-dig [Ldh-str]; labels capped at 63 octets (RFC 1035 §2.3.4).
bool is_hostname(std::string_view d) noexcept
{
    if (d.empty()) return false;
    std::size_t start = 0;
    for (;;) {
        auto const dot = d.find('.', start);
        auto const label = d.substr(start, dot == d.npos ? d.npos : dot - start);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
            return false;
        for (char c : label)
            if (!is_alnum(c) && c != '-') return false;
        if (dot == d.npos) return true;
        start = dot + 1;
    }
}

// RFC 5321 §4.1.3 IPv4-address-literal: Snum 3("." Snum), Snum = 1*3DIGIT <= 255
bool is_ipv4(std::string_view s) noexcept
{
    int parts = 0;
    std::size_t i = 0;
    for (;;) {
        std::size_t digits = 0;
        unsigned value = 0;
        while (i < s.size() && is_digit(s[i]) && digits < 4) {
            value = value * 10 + static_cast<unsigned>(s[i] - '0');
            ++i;
            ++digits;
        }
        if (digits == 0 || digits > 3 || value > 255) return false;
        ++parts;
        if (i == s.size()) return parts == 4;
        if (s[i] != '.' || parts == 4) return false;
        ++i;
    }
}

// Counts 16-bit groups of "h16 *(":" h16)" where the last piece may be an IPv4
// address (two groups). Empty text is zero groups.
bool ipv6_groups(std::string_view s, bool allow_ipv4_tail, int& groups) noexcept
{
    groups = 0;
    if (s.empty()) return true;
    std::size_t start = 0;
    for (;;) {
        auto const colon = s.find(':', start);
        auto const piece = s.substr(start, colon == s.npos ? s.npos : colon - start);
        bool const last = colon == s.npos;
        if (last && allow_ipv4_tail && piece.find('.') != piece.npos) {
            if (!is_ipv4(piece)) return false;
            groups += 2;
            return true;
        }
        if (piece.empty() || piece.size() > 4) return false;
        for (char c : piece)
            if (!is_hex(c)) return false;
        ++groups;
        if (last) return true;
        start = colon + 1;
    }
}

// RFC 5321 §4.1.3 IPv6-addr (full, comp, v4-full, v4-comp). Like inet_pton, "::"
// may stand for a single zero group (RFC 4291 §2.2), which RFC 5321 omits.
bool is_ipv6(std::string_view s) noexcept
{
    auto const dc = s.find("::");
    int left = 0;
    int right = 0;
    if (dc == s.npos) return ipv6_groups(s, true, left) && left == 8;
    if (s.find("::", dc + 1) != s.npos) return false;
    return ipv6_groups(s.substr(0, dc), false, left)
        && ipv6_groups(s.substr(dc + 2), true, right) && left + right <= 7;
}

// Domain or address-literal. General-address-literal (RFC 5321 §4.1.3) has no
// registered tag besides IPv6, so anything else in brackets is refused.
bool is_domain(std::string_view d) noexcept
{
    if (!d.empty() && d.front() == '[') {
        if (d.size() < 3 || d.back() != ']') return false;
        auto const inner = d.substr(1, d.size() - 2);
        if (istarts_with(inner, "IPv6:")) return is_ipv6(inner.substr(5));
        return is_ipv4(inner);
    }
    return is_hostname(d);
}

enum class path_kind { reverse, forward };

// Reads the domain starting at s[pos] up to (not including) one of `stops`.
// An address literal runs to its ']'.
std::size_t domain_end(std::string_view s, std::size_t pos, std::string_view stops) noexcept
{
    if (pos < s.size() && s[pos] == '[') {
        auto const close = s.find(']', pos);
        return close == s.npos ? s.size() : close + 1;
    }
    auto const end = s.find_first_of(stops, pos);
    return end == s.npos ? s.size() : end;
}

// Parses "<...>" at the start of `s`; returns the offset after '>'.
result<std::size_t> parse_path(std::string_view s, smtp_path& out, path_kind kind)
{
    if (s.empty() || s.front() != '<') return errc::bad_address;
    std::size_t pos = 1;
    auto at = [&](char c) { return pos < s.size() && s[pos] == c; };

    if (at('>')) {
        if (kind == path_kind::forward) return errc::bad_address;  // §4.1.1.3: RCPT needs a mailbox
        out.null_path = true;
        return pos + 1;
    }

    // A-d-l ":" (source route): obsolete, accepted and ignored (§4.1.2, appendix C).
    if (at('@')) {
        for (;;) {
            if (!at('@')) return errc::bad_address;
            ++pos;
            auto const end = domain_end(s, pos, ",:>");
            if (!is_domain(s.substr(pos, end - pos))) return errc::bad_address;
            pos = end;
            if (at(',')) { ++pos; continue; }
            if (at(':')) { ++pos; break; }
            return errc::bad_address;
        }
    }

    // Local-part = Dot-string / Quoted-string (§4.1.2)
    auto const local_start = pos;
    bool quoted = false;
    if (at('"')) {
        quoted = true;
        ++pos;
        for (;;) {
            if (pos >= s.size()) return errc::bad_address;
            char const c = s[pos];
            if (c == '"') { ++pos; break; }
            if (c == '\\') {
                // quoted-pairSMTP = %d92 %d32-126
                if (pos + 1 >= s.size() || s[pos + 1] < 32 || s[pos + 1] > 126)
                    return errc::bad_address;
                out.local.push_back(s[pos + 1]);
                pos += 2;
                continue;
            }
            // qtextSMTP = %d32-33 / %d35-91 / %d93-126
            if (c < 32 || c > 126) return errc::bad_address;
            out.local.push_back(c);
            ++pos;
        }
    } else {
        while (pos < s.size() && (is_atext(s[pos]) || s[pos] == '.')) ++pos;
        out.local.assign(s.substr(local_start, pos - local_start));
        if (!is_dot_string(out.local)) return errc::bad_address;
    }

    if (at('@')) {
        ++pos;
        auto const end = domain_end(s, pos, ">");
        auto const domain = s.substr(pos, end - pos);
        if (domain.size() > smtp_max_domain) return errc::too_long;
        if (!is_domain(domain)) return errc::bad_address;
        out.domain.assign(domain);
        pos = end;
    } else if (kind == path_kind::forward && !quoted && local_start == 1
               && iequals(out.local, "postmaster")) {
        // §4.5.1: "<Postmaster>" without domain, case-insensitive. Normalised
        // so that the session compares with one string.
        out.local = "postmaster";
    } else {
        return errc::bad_address;
    }

    if (!at('>')) return errc::bad_address;
    ++pos;
    if (pos > smtp_max_path) return errc::too_long;
    return pos;
}

// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
bool is_esmtp_keyword(std::string_view k) noexcept
{
    if (k.empty() || !is_alnum(k.front())) return false;
    return std::all_of(k.begin(), k.end(), [](char c) { return is_alnum(c) || c == '-'; });
}

// esmtp-value = 1*(%d33-60 / %d62-126): printable, no '=' and no space
bool is_esmtp_value(std::string_view v) noexcept
{
    if (v.empty()) return false;
    return std::all_of(v.begin(), v.end(),
                       [](char c) { return c >= 33 && c <= 126 && c != '='; });
}

result<mail_args> parse_mail_args(std::string_view args, path_kind kind)
{
    mail_args r;
    // parse_smtp already skipped the spaces after the colon; tolerate them here too.
    while (!args.empty() && args.front() == ' ') args.remove_prefix(1);
    auto const end = parse_path(args, r.path, kind);
    if (!end) return end.error();
    auto rest = args.substr(*end);
    if (!rest.empty() && rest.front() != ' ') return errc::bad_address;

    // Mail-parameters = esmtp-param *(SP esmtp-param) (§4.1.2); like Postfix we
    // accept several spaces between parameters and trailing spaces.
    for (;;) {
        while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
        if (rest.empty()) break;
        auto const sp = rest.find(' ');
        auto const token = rest.substr(0, sp);
        rest = sp == rest.npos ? std::string_view{} : rest.substr(sp);

        auto const eq = token.find('=');
        auto const keyword = token.substr(0, eq);
        if (!is_esmtp_keyword(keyword)) return errc::bad_parameter;
        mail_param p;
        p.keyword.reserve(keyword.size());
        for (char c : keyword) p.keyword.push_back(ascii_upper(c));
        if (eq != token.npos) {
            auto const value = token.substr(eq + 1);
            if (!is_esmtp_value(value)) return errc::bad_parameter;
            p.value.assign(value);
        }
        // A repeated keyword would leave the meaning to whoever reads it
        // first or last; refuse it instead.
        if (std::any_of(r.params.begin(), r.params.end(), [&](mail_param const& q) { return q.keyword == p.keyword; }))
            return errc::bad_parameter;
        r.params.push_back(std::move(p));
    }
    return r;
}

struct verb_entry {
    std::string_view name;
    smtp_verb verb;
};
constexpr std::array<verb_entry, 13> verbs{{
    {"HELO", smtp_verb::helo},     {"EHLO", smtp_verb::ehlo},   {"MAIL", smtp_verb::mail},
    {"RCPT", smtp_verb::rcpt},     {"DATA", smtp_verb::data},   {"RSET", smtp_verb::rset},
    {"NOOP", smtp_verb::noop},     {"QUIT", smtp_verb::quit},   {"VRFY", smtp_verb::vrfy},
    {"HELP", smtp_verb::help},     {"STARTTLS", smtp_verb::starttls},
    {"AUTH", smtp_verb::auth},     {"EXPN", smtp_verb::expn},
}};

std::optional<smtp_verb> lookup_verb(std::string_view name) noexcept
{
    for (auto const& v : verbs)
        if (iequals(v.name, name)) return v.verb;
    return std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------- commands

std::string_view verb_name(smtp_verb v) noexcept
{
    for (auto const& e : verbs)
        if (e.verb == v) return e.name;
    return "?";
}

std::string_view smtp_keyword_of(std::string_view line) noexcept
{
    auto const end = line.find_first_of(" \t\r\n");
    auto const v = lookup_verb(line.substr(0, end));
    return v ? verb_name(*v) : std::string_view{};
}

result<smtp_command> parse_smtp(std::string_view line, std::size_t max_line) noexcept
{
    if (line.size() + 2 > max_line) return errc::line_too_long;
    if (line.empty()) return errc::empty_line;
    // A CR or LF here means the line reader split on something other than
    // CRLF, or a peer tries to hide a second command (smuggling class).
    for (char c : line) {
        if (c == '\r' || c == '\n') return errc::bare_cr_or_lf;
        if (c == '\0') return errc::nul_byte;
    }
    auto const sp = line.find(' ');
    auto const verb = lookup_verb(line.substr(0, sp));
    if (!verb) return errc::unknown_command;
    auto args = sp == line.npos ? std::string_view{} : line.substr(sp + 1);

    if (*verb == smtp_verb::mail || *verb == smtp_verb::rcpt) {
        // RFC 5321 §4.1.1.2/§4.1.1.3: "MAIL FROM:" / "RCPT TO:", exactly one
        // space after the keyword; spaces after the colon tolerated as Postfix does.
        auto const prefix = *verb == smtp_verb::mail ? std::string_view{"FROM:"}
                                                     : std::string_view{"TO:"};
        if (!istarts_with(args, prefix)) return errc::bad_arguments;
        args.remove_prefix(prefix.size());
        while (!args.empty() && args.front() == ' ') args.remove_prefix(1);
    }
    return smtp_command{*verb, args};
}

// ---------------------------------------------------------------- envelope

std::string smtp_path::to_string() const
{
    if (null_path) return {};
    std::string s;
    if (is_dot_string(local)) {
        s = local;
    } else {
        // Quoted-string with quoted-pairs for '"' and '\' (§4.1.2).
        s.push_back('"');
        for (char c : local) {
            if (c == '"' || c == '\\') s.push_back('\\');
            s.push_back(c);
        }
        s.push_back('"');
    }
    if (!domain.empty()) {
        s.push_back('@');
        s += domain;
    }
    return s;
}

result<mail_args> parse_mail_from(std::string_view args)
{
    return parse_mail_args(args, path_kind::reverse);
}

result<mail_args> parse_rcpt_to(std::string_view args)
{
    return parse_mail_args(args, path_kind::forward);
}

result<std::uint64_t> parse_size_param(std::string_view value) noexcept
{
    // RFC 1870 §3: size-value = 1*20DIGIT
    if (value.empty() || value.size() > 20) return errc::bad_number;
    std::uint64_t n = 0;
    for (char c : value) {
        if (!is_digit(c)) return errc::bad_number;
        auto const d = static_cast<std::uint64_t>(c - '0');
        if (n > (UINT64_MAX - d) / 10) return errc::out_of_range;
        n = n * 10 + d;
    }
    return n;
}

result<body_type> parse_body_param(std::string_view value) noexcept
{
    if (iequals(value, "7BIT")) return body_type::seven_bit;
    if (iequals(value, "8BITMIME")) return body_type::eight_bit_mime;
    return errc::bad_parameter;
}

}  // namespace popgate::proto
