#include "popgate/cli/check_config.hpp"

#include "popgate/config/config.hpp"
#include "popgate/daemon/state_dirs.hpp"
#include "popgate/io/tls.hpp"

#include <unistd.h>

#include <iostream>
#include <vector>

namespace popgate::cli {
namespace {

namespace fs = std::filesystem;

bool uses_tls(config::settings const& s)
{
    for (auto const& l : s.listeners)
        if (l.tls != config::tls_mode::none) return true;
    return false;
}

// As serve does at start, before it switches users: the files are read by
// whoever starts the daemon. Both missing with self_signed: made at start,
// so their directory must be one the starter can make or write.
void check_tls(config::settings const& s, std::vector<std::string>& problems)
{
    if (!uses_tls(s)) return;
    auto const& t = s.tls;
    std::error_code ec;
    bool const have_cert = fs::exists(t.cert_file, ec);
    bool const have_key = fs::exists(t.key_file, ec);
    if (!have_cert && !have_key && t.self_signed) {
        for (auto const& [key, file] : {std::pair{"tls.cert_file", t.cert_file}, std::pair{"tls.key_file", t.key_file}}) {
            auto const dir = file.has_parent_path() ? file.parent_path() : fs::path(".");
            bool const dir_ok = fs::exists(dir, ec) ? ::access(dir.c_str(), W_OK | X_OK) == 0 || ::geteuid() == 0
                                                    : daemon::why_not_creatable(dir).empty();
            if (!dir_ok)
                problems.push_back(std::string(key) + ": " + file.string() +
                                   " is missing and tls.self_signed cannot make it: " + dir.string() +
                                   " is not writable");
        }
        return;
    }
    try {
        auto const material = io::read_tls_material(t);
        io::make_server_tls(t, material);  // a certificate, a key, and the pair matches
    } catch (std::exception const& e) {
        problems.push_back(e.what());
    }
}

}  // namespace

int check_config(std::string const& file)
{
    auto r = config::load_effective(file);
    if (!r.value) {
        std::cerr << config::format_errors(r, file);
        return 1;
    }
    auto const& s = *r.value;
    std::vector<std::string> problems;
    try {
        auto const account = daemon::find_service_account(s);
        check_tls(s, problems);
        for (auto& p : daemon::check_state_dirs(s, account)) problems.push_back(std::move(p));
    } catch (std::exception const& e) {
        problems.push_back(e.what());
    }
    std::string name = file.empty() ? config::default_config_file().string() : file;
    if (name.empty()) name = "(built-in default)";
    // Not a problem (health and /metrics work), but reports are refused.
    for (auto const& l : s.listeners)
        if (l.protocol == "http" && l.api_key_file.empty())
            std::cerr << name << ": note: listener '" << l.name
                      << "' has no api_key_file: it serves health and /metrics but refuses every Dovecot "
                         "auth-policy report (403)\n";
    for (auto const& p : problems) std::cerr << name << ": " << p << "\n";
    if (!problems.empty()) return 1;
    std::cout << "configuration OK (" << s.listeners.size() << " listeners)\n";
    return 0;
}

}  // namespace popgate::cli
