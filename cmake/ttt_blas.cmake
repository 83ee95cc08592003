# TTT_WITH_BLAS=ON: Eigen's large products (GEMM, GEMV, triangular ones) in float and double run
# through the system BLAS (Eigen's EIGEN_USE_BLAS), Debian's OpenBLAS by default. Measured in
# benchmarks/README.md, "BLAS backend (TTT_WITH_BLAS)".
#
# EIGEN_USE_BLAS goes on the `ttt` INTERFACE target, so that every translation unit of a program
# that links ttt::ttt or ttt::precompiled (the static library itself included) sees the same
# Eigen: a program in which some files include Eigen with EIGEN_USE_BLAS and others without has two
# different definitions of Eigen's product kernels (an ODR violation; which one runs is up to the
# linker). Files of the program that include Eigen without linking ttt must get the definition too.
#
# The vendor: OpenBLAS (Debian: libopenblas-dev) unless BLA_VENDOR says otherwise
# (-DBLA_VENDOR=Intel10_64lp for MKL, -DBLA_VENDOR=All for whatever FindBLAS finds first, which
# may be libblas-dev's unoptimised reference BLAS: not measured here, not what the option is for).
if(NOT TTT_WITH_BLAS)
  return()
endif()

if(NOT DEFINED BLA_VENDOR OR BLA_VENDOR STREQUAL "")
  set(BLA_VENDOR OpenBLAS)
endif()
set(TTT_BLAS_VENDOR "${BLA_VENDOR}")
find_package(BLAS)
if(NOT BLAS_FOUND)
  message(FATAL_ERROR "TTT_WITH_BLAS=ON but no BLAS of vendor '${BLA_VENDOR}' was found: install "
                      "Debian's OpenBLAS (apt-get install libopenblas-dev, or scripts/setup.sh --blas), "
                      "pass another vendor (-DBLA_VENDOR=..., see CMake's FindBLAS), "
                      "or configure with -DTTT_WITH_BLAS=OFF (the default: Eigen's own products)")
endif()
target_compile_definitions(ttt INTERFACE EIGEN_USE_BLAS TTT_WITH_BLAS=1)  # the second for code that asks
target_link_libraries(ttt INTERFACE BLAS::BLAS)
message(STATUS "ttt: TTT_WITH_BLAS=ON, Eigen's products through ${BLA_VENDOR}: ${BLAS_LIBRARIES}")
