// SMTP replies: formatting ours (RFC 5321 §4.2, RFC 2034 enhanced codes) and
// parsing the upstream's (multi-line, enhanced codes moved aside).
#include "popgate/proto/smtp.hpp"

#include <stdexcept>

namespace popgate::proto {
namespace {

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// Replaces what a reply's text may not hold (RFC 5321 §4.2 textstring: HT
// and 32..126), so that text quoted from a peer cannot break reply framing
// nor pass on 8-bit octets, perhaps a UTF-8 sequence cut in half.
void append_safe(std::string& out, std::string_view text)
{
    for (char c : text) {
        auto const u = static_cast<unsigned char>(c);
        out.push_back(u == '\t' || (u >= 32 && u < 127) ? c : '?');
    }
}

// Length of a leading RFC 3463 code "class.subject.detail" (subject and detail
// 1..3 digits) of the given class, or 0.
std::size_t enhanced_prefix(std::string_view t, int cls) noexcept
{
    if (t.size() < 5 || t[0] != static_cast<char>('0' + cls) || t[1] != '.') return 0;
    std::size_t i = 2;
    for (int part = 0; part < 2; ++part) {
        std::size_t digits = 0;
        while (i < t.size() && is_digit(t[i]) && digits < 4) { ++i; ++digits; }
        if (digits == 0 || digits > 3) return 0;
        if (part == 0) {
            if (i >= t.size() || t[i] != '.') return 0;
            ++i;
        }
    }
    if (i < t.size() && t[i] != ' ') return 0;
    return i;
}

}  // namespace

std::string format_reply(smtp_reply const& r)
{
    if (r.code < 200 || r.code > 599) throw std::invalid_argument{"format_reply: bad code"};
    auto const code = std::to_string(r.code);
    std::string out;
    auto const line = [&](std::string_view text, bool last) {
        out += code;
        bool const has_text = !r.enhanced.empty() || !text.empty();
        if (has_text || !last) out.push_back(last ? ' ' : '-');
        if (!r.enhanced.empty()) {
            append_safe(out, r.enhanced);
            if (!text.empty()) out.push_back(' ');
        }
        append_safe(out, text);
        out += "\r\n";
    };
    if (r.lines.empty()) {
        line({}, true);
    } else {
        for (std::size_t i = 0; i < r.lines.size(); ++i) line(r.lines[i], i + 1 == r.lines.size());
    }
    return out;
}

std::string reply(int code, std::string_view enhanced, std::string_view text)
{
    return format_reply(smtp_reply{code, std::string{enhanced}, {std::string{text}}});
}

void reply_parser::reset() noexcept
{
    reply_.code = 0;
    reply_.enhanced.clear();
    reply_.lines.clear();
    error_.reset();
    status_ = status::more;
}

reply_parser::status reply_parser::fail(errc e) noexcept
{
    error_ = e;
    status_ = status::error;
    return status_;
}

reply_parser::status reply_parser::feed(std::string_view line)
{
    if (status_ != status::more) reset();
    if (line.size() + 2 > max_line_) return fail(errc::line_too_long);
    if (reply_.lines.size() >= max_lines_) return fail(errc::too_long);
    for (char c : line) {
        if (c == '\r' || c == '\n') return fail(errc::bare_cr_or_lf);
        if (c == '\0') return fail(errc::nul_byte);
    }
    // Reply-line = *( Reply-code "-" [ textstring ] CRLF )
    //              Reply-code [ SP textstring ] CRLF        (RFC 5321 §4.2)
    if (line.size() < 3 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]))
        return fail(errc::bad_arguments);
    int const code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (reply_class(code) == 0) return fail(errc::bad_arguments);
    if (!reply_.lines.empty() && code != reply_.code) return fail(errc::bad_arguments);
    reply_.code = code;

    bool last = true;
    std::string_view text;
    if (line.size() > 3) {
        if (line[3] == '-') last = false;
        else if (line[3] != ' ') return fail(errc::bad_arguments);
        text = line.substr(4);
    }
    reply_.lines.emplace_back(text);
    if (!last) return status_ = status::more;
    split_enhanced();
    return status_ = status::done;
}

void reply_parser::split_enhanced()
{
    // Only when every line carries the same code of the right class (RFC 2034
    // §4 asks servers to prefix each line); otherwise keep the texts as sent.
    int const cls = reply_class(reply_.code);
    std::string_view first;
    for (auto const& l : reply_.lines) {
        auto const n = enhanced_prefix(l, cls);
        if (n == 0) return;
        auto const code = std::string_view{l}.substr(0, n);
        if (first.empty()) first = code;
        else if (code != first) return;
    }
    reply_.enhanced.assign(first);
    for (auto& l : reply_.lines) l.erase(0, std::min(l.size(), reply_.enhanced.size() + 1));
}

}  // namespace popgate::proto
