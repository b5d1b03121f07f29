#include "backend/backend.h"

#include <cstdlib>
#include <cstring>
#include <strings.h>

#include "common.h"

namespace kvfit {

std::unique_ptr<Backend> create_backend(kvfit_backend_kind kind) {
    if (kind == KVFIT_BACKEND_AUTO) {
        if (const char *env = std::getenv("KVFIT_BACKEND"); env && *env) {
            if (!strcasecmp(env, "cpu")) kind = KVFIT_BACKEND_CPU;
            else if (!strcasecmp(env, "cuda")) kind = KVFIT_BACKEND_CUDA;
            else if (!strcasecmp(env, "vulkan")) kind = KVFIT_BACKEND_VULKAN;
            else if (strcasecmp(env, "auto"))
                fail(KVFIT_E_ARG, "KVFIT_BACKEND='%s' is not one of auto, cpu, cuda, vulkan", env);
        }
    }
    switch (kind) {
        case KVFIT_BACKEND_AUTO:  // GPU backends join this order as they are built
        case KVFIT_BACKEND_CPU: return create_cpu_backend();
        case KVFIT_BACKEND_CUDA: fail(KVFIT_E_BACKEND_UNAVAILABLE, "the CUDA backend is not part of this build");
        case KVFIT_BACKEND_VULKAN: fail(KVFIT_E_BACKEND_UNAVAILABLE, "the Vulkan backend is not part of this build");
        default: fail(KVFIT_E_ARG, "unknown backend kind %d", int(kind));
    }
}

}  // namespace kvfit
