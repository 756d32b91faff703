# Install headers, libraries and a package config so that another project can find_package(qkv).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# One export set per library, so find_package(qkv COMPONENTS core) loads only core and finds only core's
# dependencies (qkvConfig.cmake.in lists them).
get_property(_qkv_libs GLOBAL PROPERTY QKV_LIBRARIES)
foreach(lib IN LISTS _qkv_libs)
  string(REPLACE "qkv_" "" component ${lib})
  install(TARGETS ${lib} EXPORT qkv_${component}
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  install(EXPORT qkv_${component} NAMESPACE qkv:: FILE qkv_${component}Targets.cmake
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/qkv)
endforeach()
if(TARGET qkv)  # the program: qkv train, eval, sample, ...
  install(TARGETS qkv RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
foreach(folder IN LISTS QKV_FOLDERS)
  if(EXISTS ${PROJECT_SOURCE_DIR}/${folder})
    install(DIRECTORY ${folder}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/qkv/${folder}
            FILES_MATCHING PATTERN "*.h" PATTERN "ops/kernel.h" EXCLUDE PATTERN "autograd_detail.h" EXCLUDE PATTERN "dist/detail.h" EXCLUDE
            PATTERN "cli/commands.h" EXCLUDE PATTERN "run/config_keys.h" EXCLUDE
            PATTERN "datasets/detail.h" EXCLUDE PATTERN "datasets/unicode_tables.h" EXCLUDE
            PATTERN "datasets/unicode_nfc.h" EXCLUDE)
  endif()
endforeach()
install(FILES qkv.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/qkv)  # the umbrella header, <qkv/qkv.h>
configure_package_config_file(cmake/qkvConfig.cmake.in ${PROJECT_BINARY_DIR}/qkvConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/qkv)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/qkvConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/qkvConfig.cmake ${PROJECT_BINARY_DIR}/qkvConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/qkv)
# GPT-2's vocabulary files, for --tokenizer gpt2 (datasets/bpe.h: gpt2_directory).
install(FILES tests/fixtures/gpt2/encoder.json tests/fixtures/gpt2/vocab.bpe tests/fixtures/gpt2/LICENSE
        DESTINATION ${CMAKE_INSTALL_DATADIR}/qkv/gpt2)
