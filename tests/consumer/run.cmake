# Installs the qkv build into a prefix, then configures, builds and runs tests/consumer against it (asking for
# core, layers and optim only), a core-only project (tests/consumer/core_only) against it, and tests/consumer
# again with qkv added as a subdirectory. Run by ctest (package/consumer).
set(flags "")
if(SANITIZE)
  set(flags "-DCMAKE_CXX_FLAGS=-fsanitize=${SANITIZE}" "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=${SANITIZE}")
endif()
function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc WORKING_DIRECTORY ${WORK})
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})  # the consumer writes its checkpoint files here
step(${CMAKE_COMMAND} --install ${QKV_BUILD} --prefix ${WORK}/prefix)
step(${WORK}/prefix/bin/qkv --version)  # the program is installed too
# The experiment asks for core, layers and optim only, and builds with the train and datasets dependencies
# disabled: checkpoints (layers/save.h, optim/save.h) need none of them.
step(${CMAKE_COMMAND} -S ${QKV_SOURCE}/tests/consumer -B ${WORK}/installed -DCMAKE_PREFIX_PATH=${WORK}/prefix
     -DCMAKE_BUILD_TYPE=Release ${flags}
     -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=ON -DCMAKE_DISABLE_FIND_PACKAGE_tomlplusplus=ON
     -DCMAKE_DISABLE_FIND_PACKAGE_spdlog=ON -DCMAKE_DISABLE_FIND_PACKAGE_CLI11=ON -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON)
step(${CMAKE_COMMAND} --build ${WORK}/installed)
step(${WORK}/installed/consumer)
# qkv::core alone, as if nothing but Eigen, fmt and OpenBLAS were installed: the other dependencies are disabled.
step(${CMAKE_COMMAND} -S ${QKV_SOURCE}/tests/consumer/core_only -B ${WORK}/core_only
     -DCMAKE_PREFIX_PATH=${WORK}/prefix -DCMAKE_BUILD_TYPE=Release ${flags}
     -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=ON -DCMAKE_DISABLE_FIND_PACKAGE_tomlplusplus=ON
     -DCMAKE_DISABLE_FIND_PACKAGE_spdlog=ON -DCMAKE_DISABLE_FIND_PACKAGE_CLI11=ON)
step(${CMAKE_COMMAND} --build ${WORK}/core_only)
step(${WORK}/core_only/custom_op)
step(${CMAKE_COMMAND} -S ${QKV_SOURCE}/tests/consumer -B ${WORK}/subdir -DQKV_SOURCE_DIR=${QKV_SOURCE}
     -DCMAKE_BUILD_TYPE=Release -DQKV_NATIVE=OFF ${flags})
step(${CMAKE_COMMAND} --build ${WORK}/subdir -j 2 --target consumer)
step(${WORK}/subdir/consumer)
