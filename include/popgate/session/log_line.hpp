#pragma once
// A log line decided by pure session code and written by the coroutine with
// the session id in front: "sid=... <text>".
#include <spdlog/common.h>

#include <string>

namespace popgate::session {

struct log_line {
    spdlog::level::level_enum level;
    std::string text;
};

}  // namespace popgate::session
