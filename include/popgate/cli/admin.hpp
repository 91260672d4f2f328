#pragma once
// The admin subcommands of `popgate` (user, allow, grant, db, check-config).
// Each returns the process exit code; errors go to stderr as one line.
#include <CLI/CLI.hpp>

#include <functional>
#include <string>

namespace popgate::cli {

// Exit codes of every command (README "Exit codes", popgate(8)).
inline constexpr int exit_ok = 0;
inline constexpr int exit_refused = 1;         // refused, not found, invalid input or configuration
inline constexpr int exit_usage = 2;           // the command line itself: unknown option, missing argument
inline constexpr int exit_db_unavailable = 3;  // database missing, locked, unreadable or too new

struct global_options {
    std::string config_file;  // "" = config::default_config_file()
    std::string db_path;      // overrides storage.database
    bool json = false;        // --json on list and show commands
};

// Registers the subcommands on `app`; `run` is set to the chosen action.
void add_admin_commands(CLI::App& app, global_options& g, std::function<int()>& run);

}  // namespace popgate::cli
