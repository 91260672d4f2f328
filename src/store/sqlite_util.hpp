#pragma once
// Thin RAII over the SQLite C API, private to the store implementation.
#include "popgate/store/store.hpp"

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace popgate::store::detail {

[[noreturn]] void throw_sqlite(sqlite3* db, int rc, std::string_view what);

class stmt {
public:
    stmt(sqlite3* db, std::string_view sql);
    ~stmt();
    stmt(stmt const&) = delete;
    stmt& operator=(stmt const&) = delete;

    stmt& bind(int i, std::string_view v);
    stmt& bind(int i, std::int64_t v);
    stmt& bind_opt(int i, std::optional<std::string> const& v);
    stmt& bind_opt(int i, std::optional<std::int64_t> const& v);
    stmt& bind_null(int i);

    bool step();  // true: a row is ready; false: done. Throws on error.
    void run() { while (step()) {} }
    void reset();

    std::int64_t i64(int col) const;
    std::string text(int col) const;
    std::optional<std::string> opt_text(int col) const;
    std::optional<std::int64_t> opt_i64(int col) const;

private:
    sqlite3* db_;
    sqlite3_stmt* s_ = nullptr;
};

void exec(sqlite3* db, char const* sql);

// BEGIN IMMEDIATE ... COMMIT; rolls back unless commit() ran.
class transaction {
public:
    explicit transaction(sqlite3* db);
    ~transaction();
    void commit();

private:
    sqlite3* db_;
    bool done_ = false;
};

}  // namespace popgate::store::detail
