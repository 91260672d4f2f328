#pragma once
// The admin subcommands of `popgate` (user, allow, grant, db, check-config).
// Each returns the process exit code; errors go to stderr as one line.
#include <CLI/CLI.hpp>

#include <functional>
#include <string>

namespace popgate::cli {

struct global_options {
    std::string config_file;  // "" = config/popgate.toml if present, else the embedded default
    std::string db_path;      // overrides storage.database
};

// Registers the subcommands on `app`; `run` is set to the chosen action.
void add_admin_commands(CLI::App& app, global_options& g, std::function<int()>& run);

}  // namespace popgate::cli
