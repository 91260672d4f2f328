# Writes a header with every migration as (version, name, sql) so the binary
# carries its own schema. Invoked by CMakeLists.txt with OUT and FILES, and NS
# (the namespace under popgate::store: generated, or generated_pg for
# sql/postgresql).
if(NOT NS)
  set(NS generated)
endif()
set(body "// generated from SQL migrations by cmake/embed_migrations.cmake: do not edit\n#pragma once\n#include <array>\n#include <string_view>\nnamespace popgate::store::${NS} {\nstruct migration_source { int version; std::string_view name; std::string_view sql; };\ninline constexpr std::array<migration_source, ")
list(LENGTH FILES n)
string(APPEND body "${n}> migrations{{\n")
foreach(f IN LISTS FILES)
  get_filename_component(name ${f} NAME)
  string(REGEX MATCH "^[0-9]+" ver ${name})
  math(EXPR ver "${ver}")
  file(READ ${f} sql)
  string(APPEND body "  {${ver}, \"${name}\", R\"popgate_sql(${sql})popgate_sql\"},\n")
endforeach()
string(APPEND body "}};\n}  // namespace popgate::store::${NS}\n")
file(WRITE ${OUT} "${body}")
