#pragma once
// SMTP protocol pieces with no I/O: command parser, envelope path parser,
// DATA reader (dot-unstuffing and the anti-smuggling terminator rule),
// reply formatting, the upstream reply parser and the command table.
// RFC 5321 (SMTP), 1870 (SIZE), 6152 (8BITMIME), 2920 (PIPELINING),
// 3207 (STARTTLS), 4954 (AUTH), 2034/3463 (enhanced codes).
#include "popgate/proto/errc.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace popgate::proto {

// RFC 5321 §4.5.3.1 size limits.
inline constexpr std::size_t smtp_max_command_line = 512;  // §4.5.3.1.4, incl. CRLF
inline constexpr std::size_t smtp_max_reply_line = 512;    // §4.5.3.1.5, incl. CRLF
inline constexpr std::size_t smtp_max_text_line = 1000;    // §4.5.3.1.6, incl. CRLF
// §4.5.3.1.1 and §4.5.3.1.3 give 64 octets for a local part and 256 for a
// path as minimums a server must take, and ask that none be imposed where
// possible: SRS senders of forwarders and VERP bounce addresses pass 64, and
// Postfix takes them. popgate takes a path of up to 900 octets ("<" and ">"
// included), so that an address always fits one 998-octet header line
// (relay_drop's X-Envelope-To) and an upstream's reply echoing it. A domain
// longer than DNS allows cannot exist.
inline constexpr std::size_t smtp_max_domain = 255;  // §4.5.3.1.2
inline constexpr std::size_t smtp_max_path = 900;

// ---------------------------------------------------------------- commands

// Order matters: spec_for() indexes the command table with it.
enum class smtp_verb { helo, ehlo, mail, rcpt, data, rset, noop, quit, vrfy, help, starttls, auth, expn };

// Upper-case name for logs ("MAIL").
std::string_view verb_name(smtp_verb v) noexcept;
// The command keyword a line starts with (up to a space, tab, CR or LF),
// when it is one we know; empty otherwise. What a log may say of a line
// that did not parse: the rest may be a password or a SASL response.
std::string_view smtp_keyword_of(std::string_view line) noexcept;

struct smtp_command {
    smtp_verb verb;
    // Views `line`. For MAIL/RCPT: the text after "FROM:"/"TO:" with leading
    // spaces skipped. For the other verbs: everything after the first space,
    // unvalidated (the session decides whether the verb takes arguments).
    std::string_view args;
};

// `line` has its CRLF stripped. Errors: line_too_long (line + CRLF > max_line),
// empty_line, bare_cr_or_lf (CR or LF left in the line), nul_byte,
// unknown_command, bad_arguments (MAIL without " FROM:", RCPT without " TO:").
// max_line defaults to RFC 5321's 512; the session passes more for AUTH
// continuation lines (RFC 4954 §4 lifts the limit for AUTH).
result<smtp_command> parse_smtp(std::string_view line,
                                std::size_t max_line = smtp_max_command_line) noexcept;

// ---------------------------------------------------------------- envelope

struct smtp_path {
    std::string local;      // unquoted: `"john doe"@x` gives `john doe`
    std::string domain;     // as written; address literals keep brackets: "[192.0.2.1]"
    bool null_path = false; // "<>" (reverse-path of bounces)

    // "local@domain", local re-quoted when it is not a dot-string;
    // "" for the null path; "postmaster" when the domain is empty.
    std::string to_string() const;
};

struct mail_param {
    std::string keyword;  // upper-cased
    std::string value;    // empty when the parameter has no "=value"
};

struct mail_args {
    smtp_path path;
    std::vector<mail_param> params;

};

// `args` is smtp_command::args of MAIL. Angle brackets are required; "<>" is
// allowed; a source route ("<@a,@b:user@c>") is accepted and discarded
// (RFC 5321 §4.1.2 and appendix C). Errors: bad_address (syntax), too_long
// (local > 64, domain > 255, path > 256 octets), bad_parameter (parameter
// syntax, duplicate keyword).
result<mail_args> parse_mail_from(std::string_view args);

// Same for RCPT, but "<>" is refused and "<postmaster>" (any case, RFC 5321
// §4.5.1) is accepted as local "postmaster" with an empty domain.
result<mail_args> parse_rcpt_to(std::string_view args);

// RFC 1870 SIZE value: 1*20DIGIT. Errors: bad_number, out_of_range (> 2^64-1).
result<std::uint64_t> parse_size_param(std::string_view value) noexcept;

// RFC 6152 BODY values we support (BINARYMIME, RFC 3030, is not offered).
enum class body_type { seven_bit, eight_bit_mime };
// Case-insensitive "7BIT" / "8BITMIME"; anything else: bad_parameter.
result<body_type> parse_body_param(std::string_view value) noexcept;

// ---------------------------------------------------------------- DATA

// Reads the message after the 354 reply. Ends ONLY at CRLF "." CRLF (or "."
// CRLF as the first line: an empty message). A bare CR or bare LF anywhere is
// an error (SMTP smuggling, CVE-2023-51764 class) but does not end the data:
// the reader keeps discarding up to the real terminator so the session stays
// in step with the client, then returns done and error() says why the message
// must be refused. Hence "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n" never end DATA.
class data_reader {
public:
    enum class status { more, done };

    // max_size: largest message accepted (unstuffed octets incl. CRLFs).
    // max_line: longest line incl. CRLF (RFC 5321 §4.5.3.1.6: 998 + CRLF),
    // counted after unstuffing so that any valid 998-octet line survives the
    // transparency dot. Throws std::invalid_argument if max_line < 3.
    explicit data_reader(std::size_t max_size, std::size_t max_line = smtp_max_text_line);

    // Feeds the next chunk (any size, any split point). Appends the unstuffed
    // message to `out`, line ends kept as CRLF, the terminator not included.
    // Once error() is set, nothing more is appended (the content of `out` is
    // then useless). `consumed` = input bytes used: less than in.size() only on
    // done, and the rest (pipelined commands) belongs to the session.
    // Feeding after done consumes nothing and returns done.
    status feed(std::string_view in, std::size_t& consumed, std::string& out);

    // First problem seen: bare_cr_or_lf, line_too_long or too_long.
    std::optional<errc> error() const noexcept { return error_; }
    // Unstuffed octets seen so far, including those not appended after an error.
    std::uint64_t size() const noexcept { return size_; }
    bool finished() const noexcept { return state_ == state::finished; }
    // Ready for the next message with the same limits.
    void reset() noexcept;

private:
    enum class state : unsigned char { line_start, dot, in_line, cr, dot_cr, finished };

    bool step(char c, std::string& out);
    void content(char c, std::string& out);
    void content_run(std::string_view run, std::string& out);
    void count(char c, std::string& out);
    void fail(errc e) noexcept;

    std::size_t max_size_;
    std::size_t max_line_;
    std::uint64_t size_ = 0;
    std::size_t line_len_ = 0;  // unstuffed octets of the current line, without CRLF
    state state_ = state::line_start;
    std::optional<errc> error_;
};

// ---------------------------------------------------------------- replies

struct smtp_reply {
    int code = 0;
    std::string enhanced;             // "2.0.0" (RFC 3463) or empty
    std::vector<std::string> lines;   // texts without code; empty vector = one bare line
};

// "250-first\r\n250 last\r\n", with "<enhanced> " after the code on every line
// when set (RFC 2034 §4). CR, LF, NUL and other controls in texts become '?'
// so peer bytes quoted in a reply cannot inject lines. Throws
// std::invalid_argument for a code outside 200..599 (a bug in the caller).
std::string format_reply(smtp_reply const& r);
std::string reply(int code, std::string_view enhanced, std::string_view text);

// 2, 3, 4 or 5 (RFC 5321 §4.2.1); 0 for a code outside 200..599.
constexpr int reply_class(int code) noexcept
{
    return code >= 200 && code <= 599 ? code / 100 : 0;
}

// Parses an upstream server's reply, one line (CRLF stripped) at a time.
// Multi-line replies ("250-..." then "250 ...", RFC 5321 §4.2.1) must repeat
// the same code. When every line starts with an enhanced code of the reply's
// class (and the same one), it is moved to reply().enhanced; otherwise texts
// are kept whole. Errors (error()): line_too_long, too_long (more than
// max_lines lines), bare_cr_or_lf, nul_byte, bad_arguments (no 3-digit code in
// 200..599, bad separator, code changed between lines).
class reply_parser {
public:
    enum class status { more, done, error };

    explicit reply_parser(std::size_t max_line = smtp_max_reply_line,
                          std::size_t max_lines = 100) noexcept
        : max_line_{max_line}, max_lines_{max_lines}
    {}

    // After done or error, the next feed starts a new reply.
    status feed(std::string_view line);
    smtp_reply const& reply() const noexcept { return reply_; }
    std::optional<errc> error() const noexcept { return error_; }
    void reset() noexcept;

private:
    status fail(errc e) noexcept;
    void split_enhanced();

    std::size_t max_line_;
    std::size_t max_lines_;
    smtp_reply reply_;
    std::optional<errc> error_;
    status status_ = status::more;
};

// ---------------------------------------------------------------- command table

// Session phases as bits, so a spec lists every phase that accepts a verb.
enum class smtp_phase : unsigned {
    connected = 1,  // banner sent, no HELO/EHLO yet
    greeted = 2,    // after HELO/EHLO, no transaction
    in_mail = 4,    // after an accepted MAIL
    in_rcpt = 8,    // after at least one accepted RCPT
};
inline constexpr unsigned smtp_any_phase = 1u | 2u | 4u | 8u;

constexpr unsigned phase_bits(smtp_phase p) noexcept
{
    return static_cast<unsigned>(p);
}
constexpr unsigned operator|(smtp_phase a, smtp_phase b) noexcept
{
    return static_cast<unsigned>(a) | static_cast<unsigned>(b);
}
constexpr unsigned operator|(unsigned a, smtp_phase b) noexcept
{
    return a | static_cast<unsigned>(b);
}

struct smtp_command_spec {
    smtp_verb verb;
    unsigned allowed_phases;  // smtp_phase bits
    bool pre_tls;             // accepted before STARTTLS when TLS is required
    bool ends_group;          // must be last of a pipelined group (RFC 2920 §3.1)
    bool secret_args;         // never logged (AUTH initial response)
    bool junk;                // makes no progress: counts against limits.max_junk_commands

    constexpr bool allowed_in(smtp_phase p) const noexcept
    {
        return (allowed_phases & static_cast<unsigned>(p)) != 0;
    }
};

namespace detail {
using enum smtp_phase;
// Phases: HELO/EHLO restart the session at any time (RFC 5321 §4.1.4);
// STARTTLS and AUTH only outside a transaction (RFC 3207 §4, RFC 4954 §4);
// DATA needs a recipient (§3.3). HELO ends a group too: pipelining is an
// EHLO extension and a greeting resets the state behind later commands.
// AUTH is no progress (junk) until a transaction moves: AUTH and "*" over
// and over must not hold a session for ever.
inline constexpr std::array<smtp_command_spec, 13> smtp_commands{{
    //  verb                  allowed phases       pre_tls ends_group secret_args junk
    {smtp_verb::helo,      smtp_any_phase,      true,   true,      false,      false},
    {smtp_verb::ehlo,      smtp_any_phase,      true,   true,      false,      false},
    {smtp_verb::mail,      phase_bits(greeted), false,  false,     false,      false},
    {smtp_verb::rcpt,      in_mail | in_rcpt,   false,  false,     false,      false},
    {smtp_verb::data,      phase_bits(in_rcpt), false,  true,      false,      false},
    {smtp_verb::rset,      smtp_any_phase,      true,   false,     false,      true},
    {smtp_verb::noop,      smtp_any_phase,      true,   true,      false,      true},
    {smtp_verb::quit,      smtp_any_phase,      true,   true,      false,      false},
    {smtp_verb::vrfy,      smtp_any_phase,      false,  true,      false,      true},
    {smtp_verb::help,      smtp_any_phase,      false,  true,      false,      true},
    {smtp_verb::starttls,  phase_bits(greeted), true,   true,      false,      false},
    {smtp_verb::auth,      phase_bits(greeted), false,  true,      true,       true},
    {smtp_verb::expn,      smtp_any_phase,      false,  true,      false,      false},
}};

constexpr bool table_in_verb_order() noexcept
{
    for (std::size_t i = 0; i < smtp_commands.size(); ++i)
        if (static_cast<std::size_t>(smtp_commands[i].verb) != i) return false;
    return true;
}
static_assert(table_in_verb_order(), "smtp_commands must follow smtp_verb order");
}  // namespace detail

constexpr smtp_command_spec const& spec_for(smtp_verb v) noexcept
{
    return detail::smtp_commands[static_cast<std::size_t>(v)];
}

}  // namespace popgate::proto
