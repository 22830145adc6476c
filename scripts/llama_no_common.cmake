# Included right after llama.cpp's project() call (CMAKE_PROJECT_llama.cpp_INCLUDE).
# llama-cpp-python forces LLAMA_BUILD_COMMON=ON in its cache although it never loads
# the library; a normal variable shadows the cache entry and saves minutes of build.
set(LLAMA_BUILD_COMMON OFF)
