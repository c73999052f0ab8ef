#pragma once
#include <cstdint>
#include "common/dtypes.h"

namespace mmrec::cpu {

// M0: [B, S, D]; key, value: [B, NC, D]; strength: [B, NC]; Ms: [B, NC + 1, S, D]. All contiguous.
template <class T>
void memory_update_fwd(const T* M0, const T* key, const T* value, const T* strength, T* Ms, int64_t B, int64_t NC,
                       int64_t S, int64_t D);

// grad, Ms: [B, NC + 1, S, D]; dM0: [B, S, D]; dkey, dvalue: [B, NC, D]; dstrength: [B, NC].
template <class T>
void memory_update_bwd(const T* grad, const T* key, const T* value, const T* strength, const T* Ms, T* dM0, T* dkey,
                       T* dvalue, T* dstrength, int64_t B, int64_t NC, int64_t S, int64_t D);

}  // namespace mmrec::cpu
