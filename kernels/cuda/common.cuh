// Shared helpers of the unires CUDA kernels: element conversions to and from f32.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16(x);
}

// Instantiates the entry points `name##_f32`, `name##_f16`, `name##_bf16` of a template
// `name<T>`. `PARAMS` is a function-like macro giving the parameter list for an element type
// (`PARAMS(float)`), `args` the argument list forwarded to the template.
#define UNIRES_FLOAT_KERNELS(name, PARAMS, args)                                        \
    extern "C" __global__ void name##_f32 PARAMS(float) { name<float> args; }          \
    extern "C" __global__ void name##_f16 PARAMS(__half) { name<__half> args; }        \
    extern "C" __global__ void name##_bf16 PARAMS(__nv_bfloat16) {                     \
        name<__nv_bfloat16> args;                                                       \
    }
