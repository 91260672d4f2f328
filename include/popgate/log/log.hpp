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

// Printable ASCII kept; everything else as \xNN; cut at `cap` with "...".
std::string escape(std::string_view peer_bytes, std::size_t cap = 120);

// A short random session id (8 hex digits), unique enough to grep one session.
std::string new_session_id();

}  // namespace popgate::log
