# kadr_bench(NAME SOURCES ... DEPS ...): a Google Benchmark binary under bench/.
function(kadr_bench name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} benchmark::benchmark)
  kadr_warnings(${name})
endfunction()
