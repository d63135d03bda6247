# kadr_test(NAME SOURCES ... DEPS ... LABEL unit|integration|browser)
# One GoogleTest binary per component; every test case is registered with CTest.
# Each binary also joins the target <LABEL>_tests (unit_tests, integration_tests), so one label's
# binaries build alone: `cmake --build --preset release --target unit_tests` (scripts/test.sh unit).
function(kadr_test name)
  cmake_parse_arguments(ARG "" "LABEL" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
  target_compile_definitions(${name} PRIVATE KADR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  kadr_warnings(${name})
  kadr_sanitize(${name})
  # The tests' own code is optimised for the compiler's time, not its own: it calls kadr's
  # libraries (built at the preset's level) and spends its time waiting on them. Test files are
  # most of the build, and most of a test file's compile time is code generation, so -O1
  # (Release) and -O0 (the sanitizer build) cut the two CI builds by a fifth to a quarter (ADR 0018).
  # The benchmarks (bench/) keep the preset's level.
  if(KADR_SANITIZE)
    target_compile_options(${name} PRIVATE -O0)
  else()
    target_compile_options(${name} PRIVATE $<$<CONFIG:Release>:-O1>)
  endif()
  include(GoogleTest)
  gtest_discover_tests(${name} PROPERTIES LABELS ${ARG_LABEL} DISCOVERY_TIMEOUT 60)
  if(NOT TARGET ${ARG_LABEL}_tests)
    add_custom_target(${ARG_LABEL}_tests)
  endif()
  add_dependencies(${ARG_LABEL}_tests ${name})
endfunction()
