# Tests that run programs rather than doctest cases. Those labelled "slow" (installing the package, mpirun, a
# browser, PyTorch) run in `make check-all` and CI, not in the inner loop of `make test`.

# The thinking-machine example must print the values numpy computes for the same weights.
if(TARGET thinking_machine)
  add_test(NAME examples/thinking_machine COMMAND thinking_machine)
  set_tests_properties(examples/thinking_machine PROPERTIES TIMEOUT 60 PASS_REGULAR_EXPRESSION
    "softmax weights +\\[ +0\\.4283 +0\\.5717 \\].*output z = sum w v +\\[ +0\\.7858 +2\\.7150 +0\\.6425 \\].*softmax weights +\\[ +0\\.1503 +0\\.8497 \\].*\\[ +0\\.9248 +3\\.5490 +0\\.2255 \\]")
endif()

# An outside project uses qkv through find_package (after cmake --install) and through add_subdirectory.
if(QKV_INSTALL)
  add_test(NAME package/consumer
           COMMAND ${CMAKE_COMMAND} -DQKV_BUILD=${PROJECT_BINARY_DIR} -DQKV_SOURCE=${PROJECT_SOURCE_DIR}
                   -DWORK=${CMAKE_CURRENT_BINARY_DIR}/consumer -DSANITIZE=${QKV_SANITIZE}
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/consumer/run.cmake)
  set_tests_properties(package/consumer PROPERTIES LABELS slow PASS_REGULAR_EXPRESSION "consumer ok.*consumer ok")
  qkv_test_timeout(package/consumer 600)
endif()

# README's custom op (swish with its own backward) passes gradcheck, and its misuse errors name it.
if(TARGET custom_op)
  add_test(NAME examples/custom_op COMMAND custom_op)
  set_tests_properties(examples/custom_op PROPERTIES PASS_REGULAR_EXPRESSION "custom op ok")
  qkv_test_timeout(examples/custom_op 60)
endif()

# The 45-line training example must learn to reverse (it exits non-zero below 90% token accuracy).
if(TARGET train_tiny)
  add_test(NAME examples/train_tiny COMMAND train_tiny)
  qkv_test_timeout(examples/train_tiny 120)
endif()

# PyTorch loads exported files and computes the same logits (skipped where /usr/bin/python3 has no torch).
if(TARGET qkv AND EXISTS /usr/bin/python3)
  add_test(NAME interop/torch COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tools/check_torch_interop.py
                                      $<TARGET_FILE:qkv> ${CMAKE_CURRENT_BINARY_DIR}/interop)
  set_tests_properties(interop/torch PROPERTIES SKIP_RETURN_CODE 77 LABELS slow)
  qkv_test_timeout(interop/torch 300)
endif()

# Faults that need real processes: a file-size limit, SIGKILL, SIGTERM, two processes on one run directory.
if(TARGET qkv)
  add_test(NAME train/cli_faults COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/train/cli/cli_faults.sh $<TARGET_FILE:qkv>
                                         ${CMAKE_CURRENT_BINARY_DIR}/cli_faults ${PROJECT_SOURCE_DIR})
  qkv_test_timeout(train/cli_faults 300)
endif()

# A run's report.html loads in a real browser with no console errors (skipped where Chromium is not installed).
if(TARGET qkv)
  add_test(NAME train/report_browser COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/train/report/report_browser.sh $<TARGET_FILE:qkv>
                                             ${CMAKE_CURRENT_BINARY_DIR}/report_browser ${PROJECT_SOURCE_DIR})
  set_tests_properties(train/report_browser PROPERTIES SKIP_RETURN_CODE 77 LABELS slow)
  qkv_test_timeout(train/report_browser 300)
endif()

# Data parallel training under mpirun: N = 2 and 3 ranks follow the 1-process run, resume with a different N, a
# batch that does not split, bench's communication share (where qkv was built with MPI and mpirun exists).
find_program(QKV_MPIRUN mpirun)
if(TARGET qkv AND QKV_HAVE_MPI AND QKV_MPIRUN)
  add_test(NAME train/mpi COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/train/dist/mpi.sh $<TARGET_FILE:qkv>
                                  ${CMAKE_CURRENT_BINARY_DIR}/mpi ${PROJECT_SOURCE_DIR})
  set_tests_properties(train/mpi PROPERTIES RUN_SERIAL TRUE LABELS slow)
  qkv_test_timeout(train/mpi 300)
endif()

# The shape of the tree (tools/check_layout.py: file sizes, include cycles, the CLI, train/'s rooms), and every
# command the documentation shows, run in order per document (tools/doc_check.py; minutes, so labelled slow).
find_program(QKV_PYTHON3 python3)
if(QKV_PYTHON3)
  add_test(NAME tools/layout COMMAND ${QKV_PYTHON3} ${PROJECT_SOURCE_DIR}/tools/check_layout.py)
  qkv_test_timeout(tools/layout 60)
  # Every relative link of README and docs/ resolves, and every docs page a source file names exists.
  add_test(NAME docs/links COMMAND ${QKV_PYTHON3} ${PROJECT_SOURCE_DIR}/tools/check_links.py ${PROJECT_SOURCE_DIR})
  set_tests_properties(docs/links PROPERTIES PASS_REGULAR_EXPRESSION "links: 0 broken")
  qkv_test_timeout(docs/links 60)
  if(TARGET qkv)
    add_test(NAME docs/commands COMMAND ${QKV_PYTHON3} ${PROJECT_SOURCE_DIR}/tools/doc_check.py ${PROJECT_BINARY_DIR}
                                        ${CMAKE_CURRENT_BINARY_DIR}/doc_check ${PROJECT_SOURCE_DIR})
    set_tests_properties(docs/commands PROPERTIES LABELS slow)
    qkv_test_timeout(docs/commands 900)
  endif()
endif()
