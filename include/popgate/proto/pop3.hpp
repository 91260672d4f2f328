#pragma once
// POP3 (RFC 1939, RFC 2449, RFC 2595, RFC 5034) parsing and formatting.
// Pure code: no I/O, no logging. The session layer owns sockets and state.
#include "popgate/proto/errc.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace popgate::proto {

// RFC 2449 §4: a command line is at most 255 octets including the CRLF.
inline constexpr std::size_t pop3_max_line = 255;

// RFC 1939 §8: APOP digests are 16 octets MD5 shown as 32 hex digits.
inline constexpr std::size_t apop_digest_hex_len = 32;

enum class pop3_verb { user, pass, apop, auth, stat, list, uidl, top, retr, dele, rset, noop, quit, capa, stls };

// Keyword as sent on the wire (upper case), e.g. for debug logs and CAPA.
std::string_view to_string(pop3_verb v) noexcept;

struct pop3_command {
    pop3_verb verb;
    std::string_view args;   // views the parsed line; empty when no argument was given
};

// Parses one command line with the CRLF already stripped. Keywords are
// case-insensitive (RFC 1939 §3) and separated from the arguments by a single SP.
// `max_line` counts the CRLF (limits.pop3_max_line, at least 255).
// Errors: line_too_long, empty_line, nul_byte, bare_cr_or_lf, unknown_command.
result<pop3_command> parse_pop3(std::string_view line, std::size_t max_line = pop3_max_line) noexcept;

// RFC 1939 §3: UPDATE is entered only by QUIT and is not a state the command
// loop waits in, so it has no value here. Bits, so a spec lists its phases.
enum class pop3_phase : unsigned { authorization = 1, transaction = 2 };
constexpr unsigned phase_bits(pop3_phase p) noexcept { return static_cast<unsigned>(p); }

// The POP3 command table: the rules of each command as data, enforced in one
// place by the session (session/pop3/pop3_state.cpp).
struct pop3_command_spec {
    std::string_view keyword;  // as sent on the wire
    pop3_verb verb;
    unsigned phases;           // pop3_phase bits that accept it
    bool junk;                 // makes no progress: counts against limits.max_junk_commands
    bool progress;             // resets that count
    bool secret_args;          // never logged
    bool pre_tls;              // served in clear on a listener with tls = "required"

    constexpr bool allowed_in(pop3_phase p) const noexcept { return (phases & phase_bits(p)) != 0; }
};
pop3_command_spec const& spec_for(pop3_verb v) noexcept;
// The command keyword a line starts with (up to a space, tab, CR or LF),
// when it is one we know; empty otherwise. What a log may say of a line
// that did not parse: the rest may be a password or a SASL response.
std::string_view pop3_keyword_of(std::string_view line) noexcept;

// PASS, APOP and AUTH carry secrets or secret-equivalent data: never log their args.
bool pop3_secret_args(pop3_verb v) noexcept;

// RFC 1939 message number: decimal 1..2^31-1, digits only (no sign, no spaces).
result<std::uint32_t> parse_msg_number(std::string_view s) noexcept;

// "TOP msg n": message number and non-negative line count (0..2^32-1).
result<std::pair<std::uint32_t, std::uint32_t>> parse_top_args(std::string_view s) noexcept;

// "APOP name digest": name (no SP) and a 32 hex digit digest. Upper-case hex is
// accepted as sent; the caller lower-cases it before comparing.
result<std::pair<std::string_view, std::string_view>> parse_apop_args(std::string_view s) noexcept;

// "+OK text\r\n" / "-ERR text\r\n" (no text: "+OK\r\n"). CR, LF and NUL in
// the text become SP so that a reply is always exactly one line.
std::string pop3_ok(std::string_view text);
std::string pop3_err(std::string_view text);

// RFC 1939 §7 APOP timestamp "<pid.time.randomhex@host>". Characters of host
// outside [A-Za-z0-9._-] become '-': some clients (mpop) refuse '+', '/', '='.
std::string make_apop_timestamp(std::uint64_t pid, std::uint64_t unix_time, std::uint64_t random,
                                std::string_view host);

// Turns stored message bytes into the RETR/TOP multi-line response body
// (RFC 1939 §3): every line end (LF or CRLF) goes out as CRLF, a line that
// starts with '.' gets one more '.', and finish() appends the ".\r\n"
// terminator. Input may arrive in chunks split anywhere, even inside a CRLF.
// A CR not followed by LF is line content and passes through unchanged.
class pop3_stuffer {
public:
    // nullopt: whole message (RETR). n: TOP, i.e. all header lines, the empty
    // separator line, then at most n body lines (RFC 1939 §7).
    explicit pop3_stuffer(std::optional<std::uint32_t> body_lines = std::nullopt) noexcept;

    // Appends the stuffed form of raw to out. Ignores input once done().
    void feed(std::string_view raw, std::string& out);

    // Ends the last line with CRLF when the message did not, then ".\r\n".
    void finish(std::string& out);

    // TOP has sent every line it was asked for; the caller may stop reading.
    bool done() const noexcept { return done_; }

private:
    void end_line(std::string& out);

    std::optional<std::uint32_t> body_lines_;
    std::uint32_t body_sent_ = 0;
    bool in_header_ = true;
    bool at_line_start_ = true;   // no content byte of the current line emitted yet
    bool pending_cr_ = false;     // last input byte was CR; its meaning depends on the next
    bool done_ = false;
    bool finished_ = false;
};

// RFC 1939 §5 (STAT/LIST) sizes are octets as sent: a bare LF counts 2 (it
// goes out as CRLF), CRLF counts 2; stuffing and the terminator are excluded.
class crlf_counter {
public:
    void feed(std::string_view data) noexcept;
    std::uint64_t size() const noexcept { return size_; }

private:
    std::uint64_t size_ = 0;
    bool prev_cr_ = false;
};

}  // namespace popgate::proto
