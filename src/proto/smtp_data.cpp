// The SMTP DATA reader (RFC 5321 §4.5.2 transparency, §4.1.1.4 end of
// data) with the anti-smuggling terminator rule: see data_reader in smtp.hpp.
#include "popgate/proto/smtp.hpp"

#include <stdexcept>

namespace popgate::proto {

data_reader::data_reader(std::size_t max_size, std::size_t max_line)
    : max_size_{max_size}, max_line_{max_line}
{
    if (max_line < 3) throw std::invalid_argument{"data_reader: max_line < 3"};
}

void data_reader::reset() noexcept
{
    size_ = 0;
    line_len_ = 0;
    state_ = state::line_start;
    error_.reset();
}

void data_reader::fail(errc e) noexcept
{
    if (!error_) error_ = e;  // the first problem is the one reported
}

void data_reader::count(char c, std::string& out)
{
    ++size_;
    if (size_ > max_size_) fail(errc::too_long);
    // After any error the message will be refused: stop buffering it.
    if (!error_) out.push_back(c);
}

void data_reader::content(char c, std::string& out)
{
    ++line_len_;
    if (line_len_ + 2 > max_line_) fail(errc::line_too_long);
    count(c, out);
}

void data_reader::content_run(std::string_view run, std::string& out)
{
    // Same result as content() byte by byte, including which limit trips
    // first, so the outcome does not depend on how the input was chunked.
    if (!error_) {
        // No error yet, so both limits still hold and the rooms are >= 0.
        std::size_t const line_room = max_line_ - 2 - line_len_;
        std::uint64_t const size_room = max_size_ - size_;
        if (run.size() > line_room || run.size() > size_room) {
            // Bytes line_room+1 / size_room+1 would trip; content() checks the line first.
            fail(line_room <= size_room ? errc::line_too_long : errc::too_long);
            out.append(run.substr(0, static_cast<std::size_t>(std::min<std::uint64_t>(line_room, size_room))));
        } else {
            out.append(run);
        }
    }
    line_len_ += run.size();
    size_ += run.size();
}

// One byte through the state machine; true at the end of data.
bool data_reader::step(char c, std::string& out)
{
    for (;;) {
        switch (state_) {
        case state::line_start:
            if (c == '.') { state_ = state::dot; return false; }
            state_ = state::in_line;
            continue;
        case state::dot:
            if (c == '\r') { state_ = state::dot_cr; return false; }
            // RFC 5321 §4.5.2: a leading dot followed by more text is removed.
            state_ = state::in_line;
            continue;
        case state::dot_cr:
            if (c == '\n') { state_ = state::finished; return true; }  // CRLF "." CRLF
            // ".\r" + anything else: bare CR; keep the CR as data and re-read c.
            fail(errc::bare_cr_or_lf);
            content('\r', out);
            state_ = state::in_line;
            continue;
        case state::in_line:
            if (c == '\r') { state_ = state::cr; return false; }
            // A bare LF does not end a line here: only CRLF does, so nothing
            // after it can be taken for a terminator.
            if (c == '\n') fail(errc::bare_cr_or_lf);
            content(c, out);
            return false;
        case state::cr:
            if (c == '\n') {
                count('\r', out);
                count('\n', out);
                line_len_ = 0;
                state_ = state::line_start;
                return false;
            }
            fail(errc::bare_cr_or_lf);
            content('\r', out);
            state_ = state::in_line;
            continue;
        case state::finished:
            return true;
        }
    }
}

data_reader::status data_reader::feed(std::string_view in, std::size_t& consumed, std::string& out)
{
    consumed = 0;
    if (state_ == state::finished) return status::done;
    std::size_t i = 0;
    while (i < in.size()) {
        if (state_ == state::in_line) {
            // Fast path: copy the run up to the next CR or LF in one go.
            auto const stop = in.find_first_of("\r\n", i);
            auto const end = stop == in.npos ? in.size() : stop;
            if (end > i) {
                content_run(in.substr(i, end - i), out);
                i = end;
                continue;
            }
        }
        if (step(in[i++], out)) {
            consumed = i;
            return status::done;
        }
    }
    consumed = i;
    return status::more;
}

}  // namespace popgate::proto
