#pragma once
// spdlog setup and the helpers every log line uses: one line per event,
// key=value, session id first, peer bytes escaped and capped.
#include <spdlog/spdlog.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace popgate::log {

// Level "trace".."error"; file "" = stderr. Replaces the default logger.
void setup(std::string_view level, std::string const& file);

// The value of one key=value field whose bytes came from outside (a client,
// a peer, the database, an error text). Written bare when it has only
// printable ASCII other than space, `"`, `\\` and `=`; otherwise in double
// quotes with `\"` and `\\`, and `=`, control and non-ASCII bytes as \xNN.
// Either way it cannot contain the text " key=" of a field of its own, so a
// parser of the line (fail2ban, a log shipper) always finds the true fields.
// Cut at `cap` bytes of the value with "...". Empty: "".
std::string field(std::string_view value, std::size_t cap = 120);

// A short random session id (8 hex digits), unique enough to grep one session.
std::string new_session_id();

}  // namespace popgate::log
