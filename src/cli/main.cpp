// popgate: one binary for the daemon (`serve`) and the admin commands.
#include "popgate/cli/admin.hpp"
#include "popgate/daemon/serve.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>

int main(int argc, char** argv)
{
    CLI::App app{"popgate: POP-before-SMTP relay authorization gateway"};
    app.require_subcommand(0, 1);
    // Global options anywhere on the line (`popgate grant list -c FILE`): a
    // subcommand hands what it does not know to its parent. Inherited by
    // every subcommand made from here on.
    app.fallthrough();
    bool version = false;
    app.add_flag("--version", version, "print the version and exit");
    popgate::cli::global_options g;
    app.add_option("-c,--config", g.config_file,
                   "config file (default: /etc/popgate/popgate.toml; from a build tree config/popgate.toml, "
                   "else built in)");
    app.add_option("--db", g.db_path,
                   "database: a SQLite file or a postgresql:// URI (default: storage.database from the config)");

    std::function<int()> run;
    popgate::cli::add_admin_commands(app, g, run);

    auto* serve = app.add_subcommand("serve", "run the gateway daemon");
    popgate::daemon::serve_options so;
    serve->add_option("--ready-file", so.ready_file,
                      "write the bound listener ports here (JSON) once every listener accepts");
    serve->callback([&] { run = [&] { return popgate::daemon::serve(g.config_file, g.db_path, so); }; });

    try {
        app.parse(argc, argv);
    } catch (CLI::ParseError const& e) {
        int const rc = app.exit(e);  // prints the help, or the error and a hint
        return rc == 0 ? 0 : popgate::cli::exit_usage;
    }
    if (version) {
        std::cout << "popgate " << POPGATE_VERSION << "\n";
        return 0;
    }
    if (!run) {
        std::cerr << app.help();
        return popgate::cli::exit_usage;
    }
    // Admin commands print their results on stdout (--json included): what
    // the store logs (a migration, a lost connection) goes to stderr, and
    // only from warnings up. serve sets up its own log.
    auto err = spdlog::stderr_logger_mt("popgate-cli");
    err->set_level(spdlog::level::warn);
    spdlog::set_default_logger(std::move(err));
    return run();
}
