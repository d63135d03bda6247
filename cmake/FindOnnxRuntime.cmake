# Finds ONNX Runtime's C and C++ API (ADR 0006), in this order:
#   1. KADR_ONNXRUNTIME_ROOT (CMake or environment variable): a prefix with include/onnxruntime
#      and lib/libonnxruntime.so;
#   2. the project-local prefix scripts/setup-onnxruntime.sh assembles on Debian 12
#      (.deps/onnxruntime-<version> in the source tree);
#   3. the system's (Debian 13's libonnxruntime-dev: /usr/include/onnxruntime).
# Defines the imported target onnxruntime::onnxruntime, OnnxRuntime_LIBRARY (the real file, for
# install rules), OnnxRuntime_VERSION and OnnxRuntime_SYSTEM (TRUE when it lives in the system's
# library folders, so that the install rule leaves it to the package manager).
set(_kadr_ort_version 1.21.0)
set(_kadr_ort_hints)
foreach(_root IN ITEMS "${KADR_ONNXRUNTIME_ROOT}" "$ENV{KADR_ONNXRUNTIME_ROOT}"
                       "${PROJECT_SOURCE_DIR}/.deps/onnxruntime-${_kadr_ort_version}")
  if(_root)
    list(APPEND _kadr_ort_hints "${_root}")
  endif()
endforeach()

find_path(OnnxRuntime_INCLUDE_DIR onnxruntime_cxx_api.h
  HINTS ${_kadr_ort_hints} PATH_SUFFIXES include/onnxruntime onnxruntime)
find_library(OnnxRuntime_LIBRARY NAMES onnxruntime HINTS ${_kadr_ort_hints} PATH_SUFFIXES lib)

if(OnnxRuntime_INCLUDE_DIR AND EXISTS "${OnnxRuntime_INCLUDE_DIR}/onnxruntime_c_api.h")
  file(STRINGS "${OnnxRuntime_INCLUDE_DIR}/onnxruntime_c_api.h" _kadr_ort_api
       REGEX "^#define ORT_API_VERSION [0-9]+")
  string(REGEX REPLACE ".* ([0-9]+)$" "1.\\1" OnnxRuntime_VERSION "${_kadr_ort_api}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(OnnxRuntime
  REQUIRED_VARS OnnxRuntime_LIBRARY OnnxRuntime_INCLUDE_DIR
  VERSION_VAR OnnxRuntime_VERSION
  REASON_FAILURE_MESSAGE "run scripts/setup-onnxruntime.sh (or install libonnxruntime-dev on Debian 13)")

if(OnnxRuntime_FOUND AND NOT TARGET onnxruntime::onnxruntime)
  get_filename_component(OnnxRuntime_LIBRARY "${OnnxRuntime_LIBRARY}" REALPATH)
  add_library(onnxruntime::onnxruntime SHARED IMPORTED)
  set_target_properties(onnxruntime::onnxruntime PROPERTIES
    IMPORTED_LOCATION "${OnnxRuntime_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${OnnxRuntime_INCLUDE_DIR}")
  set(OnnxRuntime_SYSTEM FALSE)
  get_filename_component(_kadr_ort_dir "${OnnxRuntime_LIBRARY}" DIRECTORY)
  if(_kadr_ort_dir IN_LIST CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES OR _kadr_ort_dir MATCHES "^/usr/lib")
    set(OnnxRuntime_SYSTEM TRUE)
  endif()
endif()
mark_as_advanced(OnnxRuntime_INCLUDE_DIR OnnxRuntime_LIBRARY)
