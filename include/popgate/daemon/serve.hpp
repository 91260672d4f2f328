#pragma once
#include <string>

namespace popgate::daemon {

struct serve_options {
    std::string ready_file;
};

// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
int serve(std::string const& config_file, std::string const& db_override, serve_options const& o);

}  // namespace popgate::daemon
