// Umbrella header of ifw's public API.
#pragma once

#include <ifw/audio.hpp>
#include <ifw/error.hpp>
#include <ifw/model_info.hpp>
#include <ifw/version.hpp>
